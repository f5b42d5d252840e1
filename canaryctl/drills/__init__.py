"""Drills: chaos scenarios run on a schedule, never during a rollout or outside their window."""

from canaryctl.drills.scheduler import DrillHome, DrillStatus, discover, drill_status, serve

__all__ = ["DrillHome", "DrillStatus", "discover", "drill_status", "serve"]
