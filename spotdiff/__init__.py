"""SpotDiff pipeline: build a SpotDiff10k-style dataset of subject groups, shard it, train and evaluate.

Plain library code; orchestration (Prefect) lives in the top-level ``flows`` package.
"""

__version__ = "0.1.0"
