"""Evaluation metrics for the subject feature: orthogonality, invariance, retrieval, leakage probes.

Pure numpy / scikit-learn on feature arrays; the evaluate stage computes the features (``baselines``
for what the subject feature must beat) and ``protocol`` decides what is measured and what passes.
Every number comes with a percentile-bootstrap interval over subjects (``{"value", "low", "high"}``),
and every result is a JSON-ready dict. Figures are in
``spotdiff.evaluate.plots`` (imported on demand: it needs matplotlib).
"""

from spotdiff.evaluate.bootstrap import bootstrap_ci, bootstrap_means, interval, resample_weights
from spotdiff.evaluate.metrics import (abs_cos, different_subject_pairs, invariance, mean_abs_cos, orthogonality,
                                       retrieval_hits, retrieval_loo, retrieval_loo_hits, retrieval_topk, roc_auc,
                                       unit_rows)
from spotdiff.evaluate.probes import grouped_probe, leakage, linear_probe

__all__ = ["abs_cos", "bootstrap_ci", "bootstrap_means", "different_subject_pairs", "grouped_probe", "interval",
           "invariance", "leakage", "linear_probe", "mean_abs_cos", "orthogonality", "resample_weights",
           "retrieval_hits", "retrieval_loo", "retrieval_loo_hits", "retrieval_topk", "roc_auc", "unit_rows"]
