"""What-if analysis: hypothetical splits on demand, their measured impact, proactive advice, the report."""

from weaver.whatif.keys import KEY_BY, Cut, KeyChoice, split_candidates
from weaver.whatif.manual import WhatIf, plan_whatif, whatif_weave

__all__ = ["KEY_BY", "Cut", "KeyChoice", "WhatIf", "plan_whatif", "split_candidates", "whatif_weave"]
