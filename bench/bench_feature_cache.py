"""Stage-1 epoch time with the backbone feature cache vs re-encoding every epoch, in the same run.

    .venv/bin/python bench/bench_feature_cache.py [--shards data/shards] [--repeats 3]

"cached": read the split's cache entry, then one epoch of optimiser steps. "re-encode": decode every
train image from the shards and run the backbone (``ImageEncoder.features``), then the same steps.
The cases alternate; best and median of the repeats are reported. JSON in bench/out/feature_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spotdiff.config import load_params
from spotdiff.model.embed import ImageEncoder
from spotdiff.common.shardset import split_tars
from spotdiff.model import cache
from spotdiff.model.encoder import SpotDiffEncoder
from spotdiff.model.losses import stage1_losses
from spotdiff.train.run import batch_indices, steps_per_epoch

OUT = Path(__file__).resolve().parents[1] / "bench" / "out"


def epoch(fs: cache.FeatureSet, params) -> None:
    """One epoch of stage-1 optimiser steps on ``fs``'s features (fresh heads each time)."""
    cfg = params.train
    torch.manual_seed(cfg.seed)
    heads = SpotDiffEncoder(fs.features.shape[-1], cfg.hidden, cfg.feature_dim)
    heads.fit_input_scaling(torch.from_numpy(fs.features))
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr)
    x, labels = torch.from_numpy(fs.features), torch.from_numpy(fs.subject_labels())
    for step in range(steps_per_epoch(len(fs), cfg)):
        idx = batch_indices(step, len(fs), cfg)
        out = {k: v.reshape(len(idx), 3, -1) for k, v in heads(x[idx].reshape(len(idx) * 3, -1)).items()}
        loss = stage1_losses(out, labels[idx], margin=cfg.margin, temperature=cfg.temperature,
                             weights=cfg.weights.model_dump())["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    params = load_params("params.yaml")
    encoder = ImageEncoder.from_config(params.embed)
    tars = split_tars(args.shards, "train")
    load = os.getloadavg()
    times: dict[str, list[float]] = {"cached": [], "re-encode": []}
    with tempfile.TemporaryDirectory() as tmp:
        fs, _ = cache.load_or_build(args.shards, "train", encoder, tmp)  # fill the entry once
        entry = next(Path(tmp).glob("train-*.safetensors"))
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            epoch(cache.load(entry), params)
            times["cached"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            epoch(cache.build(tars, encoder), params)
            times["re-encode"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    result = {"load_average_start": load, "groups": len(fs), "images": 3 * len(fs),
              "best_s": best, "median_s": {k: statistics.median(v) for k, v in times.items()},
              "speedup_best": best["re-encode"] / best["cached"], "torch_threads": torch.get_num_threads()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "feature_cache.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| case | best s | median s |\n|---|---|---|")
    for k in times:
        print(f"| {k} | {best[k]:.2f} | {result['median_s'][k]:.2f} |")
    print(f"epoch with cache is {result['speedup_best']:.1f}x faster ({len(fs)} groups, load average {load})")


if __name__ == "__main__":
    main()
