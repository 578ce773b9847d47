"""Evaluation metrics for the subject feature: orthogonality, invariance, retrieval, leakage probes.

Pure numpy / scikit-learn on feature arrays; the evaluate stage computes the features and calls
these. Every number comes with a percentile-bootstrap interval over subjects
(``{"value", "low", "high"}``), and every result is a JSON-ready dict. Figures are in
``spotdiff.evaluate.plots`` (imported on demand: it needs matplotlib).
"""

from spotdiff.evaluate.bootstrap import bootstrap_ci, interval, resample_weights
from spotdiff.evaluate.metrics import (abs_cos, different_subject_pairs, invariance, mean_abs_cos, orthogonality,
                                       retrieval_loo, retrieval_topk, roc_auc, unit_rows)
from spotdiff.evaluate.probes import linear_probe

__all__ = ["abs_cos", "bootstrap_ci", "different_subject_pairs", "interval", "invariance", "linear_probe",
           "mean_abs_cos", "orthogonality", "resample_weights", "retrieval_loo", "retrieval_topk", "roc_auc",
           "unit_rows"]
