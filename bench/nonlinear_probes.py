"""Leakage side check: nonlinear probes (MLP, k-nearest-neighbours) of yaw bin and background kind,
on the raw backbone feature and the trained subject feature. Not a timing: a measurement the
evaluate stage does not make (its probes are linear, as issue 6 asks).

    .venv/bin/python bench/nonlinear_probes.py [--shards data/shards] [--model data/train]

Both probes standardise, reduce to 64 PCA components, and are fit on train subjects' views and scored
on the held-out test subjects' views (one group per subject, as the stage does). Labels and chance as
in the stage (``spotdiff.common.factors``). Point estimates only; JSON in bench/out/nonlinear_probes.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from spotdiff.config import load_params
from spotdiff.evaluate.run import encode, first_per_subject
from spotdiff.common.factors import view_labels
from spotdiff.model import cache
from spotdiff.model.trained import load_trained

OUT = Path(__file__).resolve().parents[1] / "bench" / "out"


def probes(seed: int) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"mlp": make_pipeline(StandardScaler(), PCA(64, random_state=seed),
                                 MLPClassifier((128,), max_iter=500, random_state=seed)),
            "knn10": make_pipeline(StandardScaler(), PCA(64, random_state=seed), KNeighborsClassifier(10))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--model", default="data/train", help="trained encoder folder (model.safetensors)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    p = load_params(args.params)
    model, enc = load_trained(args.model, p.embed)
    train, _ = cache.load_or_build(args.shards, "train", enc, p.train.cache_dir)
    test, _ = cache.load_or_build(args.shards, "test", enc, p.train.cache_dir)
    first = first_per_subject(test.subject_ids)
    lab_tr, lab_te = view_labels(train.records), view_labels([test.records[i] for i in first])
    dim = train.features.shape[-1]
    feats = {"raw": (train.features.reshape(-1, dim), test.features[first].reshape(-1, dim)),
             "subject": (encode(model, train.features)["subject"].reshape(len(lab_tr["pose"]), -1),
                         encode(model, test.features[first])["subject"].reshape(len(lab_te["pose"]), -1))}
    result: dict = {"n_test_subjects": len(first)}
    for label in ("pose", "background"):
        keep_tr, keep_te = lab_tr[label] != -1, lab_te[label] != -1
        if label == "background":  # a kind string, never -1
            keep_tr, keep_te = np.ones(len(keep_tr), bool), np.ones(len(keep_te), bool)
        y_tr, y_te = lab_tr[label][keep_tr], lab_te[label][keep_te]
        _, counts = np.unique(y_te, return_counts=True)
        row = {"chance": float(counts.max() / counts.sum())}
        for name, (x_tr, x_te) in feats.items():
            for probe, clf in probes(p.evaluate.seed).items():
                clf.fit(x_tr[keep_tr], y_tr)
                row[f"{name}/{probe}"] = round(float((clf.predict(x_te[keep_te]) == y_te).mean()), 3)
        result[label] = row
        print(label, json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "nonlinear_probes.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
