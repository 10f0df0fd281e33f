"""Data, prediction and concept drift between a reference and today's data.

stats: the statistics; kinds: each column's kind and drift row; decision: the rule that calls a feature drifted;
model: importance, prediction and performance drift of a registered model; reporting: the report itself.
"""

from mlops_cli.drift.decision import DriftOptions
from mlops_cli.drift.reporting import compare, drift_for_model, report

__all__ = ["DriftOptions", "compare", "drift_for_model", "report"]
