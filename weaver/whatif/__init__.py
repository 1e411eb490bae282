"""What-if analysis: hypothetical splits on demand, their measured impact, proactive advice, the report."""

from weaver.whatif.advice import ACTIONS, advise, advise_run, read_advice, score_advice
from weaver.whatif.impact import impact
from weaver.whatif.keys import KEY_BY, Cut, KeyChoice, split_candidates
from weaver.whatif.manual import WhatIf, plan_whatif, whatif_weave
from weaver.whatif.report import render as render_report

__all__ = ["ACTIONS", "KEY_BY", "Cut", "KeyChoice", "WhatIf", "advise", "advise_run", "impact", "plan_whatif",
           "read_advice", "render_report", "score_advice", "split_candidates", "whatif_weave"]
