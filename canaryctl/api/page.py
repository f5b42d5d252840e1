"""The live page at `GET /`: the runs, and the chosen run's weight over time, SLO verdicts and
the reason of each decision, refreshed every few seconds from the JSON API without reloading.
The page follows the newest running run (else the newest) until a click on a run pins it.

The chart is the report's own drawing (canaryctl/report/svg.py), sent by the API as SVG with
each run, so the live page and `canaryctl report` cannot disagree. The page holds no data and
needs no token to load; its script reads the token from the address's fragment
(`/#token=...`), which browsers never send to a server, keeps it in the tab's sessionStorage,
removes it from the address bar, and sends it as a bearer token. Everything the API returns is
put in the page as text, never as markup, except the chart, which the server escaped.
"""

from __future__ import annotations

import json
from functools import cache

from canaryctl.report.page import BADGE_COLOURS, CSS

__all__ = ["REFRESH_SECONDS", "live_page"]

REFRESH_SECONDS = 2.0

_SCRIPT = """
const REFRESH_MS = %(refresh_ms)d, COLOURS = %(colours)s;
let chosen = null, pinned = false, refreshes = 0;
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) {
  sessionStorage.setItem("canaryctl-token", hash.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function badge(outcome) {
  const node = el("span", outcome.replace(/_/g, " "), "badge outcome");
  node.style.background = COLOURS[outcome] || "#616161";
  return node;
}
function num(v) { return typeof v === "number" ? Number(v.toPrecision(4)).toString() : "—"; }
function when(epoch) {
  return epoch == null ? "—" : new Date(epoch * 1000).toISOString().replace(/\\.\\d+Z$/, "Z");
}
async function api(path) {
  const token = sessionStorage.getItem("canaryctl-token");
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const answer = await fetch(path, {headers, cache: "no-store"});
  const body = await answer.json();
  if (!answer.ok) throw new Error(answer.status + ": " + (body.error || "error"));
  return body;
}
function row(cells, header) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el(header ? "th" : "td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
    tr.appendChild(td);
  }
  return tr;
}
function showRuns(runs) {
  const table = document.getElementById("runs");
  table.replaceChildren(row(["run", "name", "phase", "canary weight", "outcome", "started",
                             "reason"], true));
  for (const run of runs) {
    const tr = row([String(run.run_id), run.name, badge(run.phase),
                    run.weight == null ? "—" : num(run.weight) + "%%", run.outcome || "—",
                    when(run.started_at), run.reason]);
    tr.dataset.runId = run.run_id;
    tr.className = "run" + (run.run_id === chosen ? " chosen" : "");
    tr.onclick = () => { chosen = run.run_id; pinned = true; refresh(); };
    table.appendChild(tr);
  }
}
function showRun(detail) {
  const run = detail.run;
  document.getElementById("run-title").textContent =
    "Run " + run.run_id + " · " + run.name + " · " + run.phase.replace(/_/g, " ");
  document.getElementById("chart").innerHTML = detail.chart_svg;
  const slos = document.getElementById("slos");
  slos.replaceChildren(row(["SLO", "canary", "baseline", "bound", "verdict", "evidence"], true));
  const last = detail.verdicts[detail.verdicts.length - 1];
  for (const check of (last ? last.checks : [])) {
    slos.appendChild(row([check.slo, num(check.canary_value), num(check.baseline_value),
                          num(check.bound), el("span", check.outcome, check.outcome),
                          check.reason]));
  }
  const decisions = document.getElementById("decisions");
  decisions.replaceChildren(row(["at", "decision", "reason"], true));
  for (const event of detail.events) {
    if (event.type !== "phase" && event.type !== "request") continue;
    const what = event.type === "phase" ? event.data.from + " → " + event.data.to
                                        : event.data.kind + " by " + event.data.by;
    const tr = row([when(event.at), what, event.data.reason || ""]);
    tr.className = "decision";
    decisions.appendChild(tr);
  }
}
async function refresh() {
  try {
    const runs = (await api("api/v1/runs?limit=20")).runs;
    if (!pinned || !runs.some(r => r.run_id === chosen)) {
      const live = runs.find(r => r.ended_at === null);
      chosen = live ? live.run_id : (runs.length ? runs[0].run_id : null);
    }
    showRuns(runs);
    if (chosen !== null) showRun(await api("api/v1/runs/" + chosen));
    refreshes += 1;
    document.getElementById("status").textContent =
      "updated " + new Date().toISOString().slice(11, 19) + "Z";
    document.body.dataset.refreshes = refreshes;
  } catch (error) {
    document.getElementById("status").textContent = "cannot read the API: " + error.message;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
"""


@cache
def live_page() -> str:
    script = _SCRIPT % {
        "refresh_ms": int(REFRESH_SECONDS * 1000),
        "colours": json.dumps(BADGE_COLOURS),
    }
    style = CSS + "tr.run{cursor:pointer}tr.chosen{background:#e3f2fd}#status{color:#666}"
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<title>canaryctl: rollouts</title>"
        f"<style>{style}</style></head><body>"
        "<h1>canaryctl rollouts</h1><p id=status>loading…</p>"
        "<table id=runs></table>"
        "<h2 id=run-title></h2><div id=chart></div>"
        "<h2>SLOs at the last analysis</h2><table id=slos></table>"
        "<h2>Decisions</h2><table id=decisions></table>"
        f"<script>{script}</script></body></html>"
    )
