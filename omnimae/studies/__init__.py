"""Studies: every variant x seed of an experiment pretrained and probed, summarized over seeds."""
from omnimae.studies.run import Run, plan_runs, run_study
from omnimae.studies.table import summarize

__all__ = ["Run", "plan_runs", "run_study", "summarize"]
