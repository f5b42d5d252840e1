"""What tokens cost: its own module so that documents which only price tokens (gates, evals)
need not load the gateway's document."""

from __future__ import annotations

from pydantic import Field

from canaryctl.runbook.common import Strict

__all__ = ["PriceSpec"]


class PriceSpec(Strict):
    """USD per 1,000 tokens, as providers publish them."""

    prompt_per_1k: float = Field(default=0.0, ge=0)
    completion_per_1k: float = Field(default=0.0, ge=0)

    def usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        """What these tokens cost: the one cost formula (gateway metrics, budgets, evals)."""
        return (
            prompt_tokens / 1000 * self.prompt_per_1k
            + completion_tokens / 1000 * self.completion_per_1k
        )
