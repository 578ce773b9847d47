"""Stage-1 training time: an epoch with the backbone feature cache vs re-encoding every epoch, and the whole
``train()`` call with a cold vs a warm cache, in the same run.

    .venv/bin/python bench/bench_train.py [--shards data/shards] [--params params.yaml] [--repeats 3]
                                          [--train-repeats 2] [--threads N] [--out bench/out/train.json]

Epoch cases (they alternate, ``--repeats`` rounds; best and median count):

* ``cached``: read the train split's cache entry (``cache.load``), then one epoch of stage-1 optimiser steps;
* ``re-encode``: decode every train image from the shards and run the backbone (``cache.build``, i.e.
  ``ImageEncoder.features``), then the same steps.

The steps are train.py's own (``Stage1`` heads, ``_losses``, AdamW, ``batch_indices``), fresh seeded heads
each time, ``steps_per_epoch`` steps; no checkpoint or validation. The two cases' features are checked to
be the same before timing.

Whole run: ``train()`` on the shards with the params' defaults into a fresh output folder (no resume), with
an empty cache folder (``cold``: one encoding pass over train and val) and then with that filled folder
(``warm``), alternating ``--train-repeats`` times. The cache lives in a temporary folder, never in
``train.cache_dir``.

Prints a table and writes ``--out`` (default ``bench/out/train.json``), with the load average at the start
and end and the torch threads. On a busy 2-core machine two torch threads spin-wait on each other in the
small heads' steps: compare ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spotdiff.config import Params, load_params  # noqa: E402
from spotdiff.model.embed import ImageEncoder  # noqa: E402
from spotdiff.common.shardset import split_tars  # noqa: E402
from spotdiff.model import cache  # noqa: E402
from spotdiff.model.encoder import SpotDiffEncoder  # noqa: E402
from spotdiff.train.run import Dist, Stage1, _losses, batch_indices, steps_per_epoch, train  # noqa: E402

OUT = ROOT / "bench" / "out"


def epoch(fs: cache.FeatureSet, params: Params) -> int:
    """One epoch of stage-1 optimiser steps on ``fs``'s features, as ``train()`` takes them; returns the steps."""
    cfg = params.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        heads = SpotDiffEncoder(fs.features.shape[-1], cfg.hidden, cfg.feature_dim, cfg.project)
    heads.fit_input_scaling(torch.from_numpy(fs.features))
    model = Stage1(heads)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    features, labels = torch.from_numpy(fs.features), torch.from_numpy(fs.subject_labels())
    steps = steps_per_epoch(len(fs), cfg)
    for step in range(steps):
        idx = batch_indices(step, len(fs), cfg)
        terms = _losses(model, features[idx], labels[idx], cfg, Dist())
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
    return steps


def _stats(times: list[float]) -> dict[str, float]:
    return {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4),
            "all_s": [round(t, 4) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the two epoch cases")
    ap.add_argument("--train-repeats", type=int, default=2, help="rounds of cold + warm train() (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", default=str(OUT / "train.json"), help="JSON output (default: bench/out/train.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    encoder = ImageEncoder.from_config(params.embed)
    tars = split_tars(args.shards, "train")
    load_start, t_start = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M")
    epochs: dict[str, list[float]] = {"cached": [], "re-encode": []}
    runs: dict[str, list[float]] = {"cold": [], "warm": []}
    hits: dict[str, list[bool]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        fs, _ = cache.load_or_build(args.shards, "train", encoder, Path(tmp) / "epoch-cache")  # fill the entry
        entry = next((Path(tmp) / "epoch-cache").glob("train-*.safetensors"))
        if not np.allclose(cache.build(tars, encoder).features, fs.features, atol=1e-5):
            raise RuntimeError("re-encoded features differ from the cache entry: the cases would not be comparable")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            steps = epoch(cache.load(entry), params)
            epochs["cached"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            epoch(cache.build(tars, encoder), params)
            epochs["re-encode"].append(time.perf_counter() - t0)
        for r in range(args.train_repeats):
            cache_dir = Path(tmp) / f"train-cache-{r}"
            run_params = params.model_copy(update={"train": params.train.model_copy(update={"cache_dir": str(cache_dir)})})
            for case in ("cold", "warm"):  # cold fills cache_dir, warm reads it
                t0 = time.perf_counter()
                res = train(args.shards, Path(tmp) / f"out-{r}-{case}", run_params, resume=False)
                runs[case].append(time.perf_counter() - t0)
                hits[case].append(res.cache_hit)
        total_steps = res.steps if args.train_repeats else None
    if hits["cold"] and (any(hits["cold"]) or not all(hits["warm"])):
        raise RuntimeError(f"cache hits {hits}: cold runs must miss and warm runs hit")

    ep = {k: _stats(v) for k, v in epochs.items()}
    result = {
        "date": t_start, "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "shards": args.shards, "groups": len(fs), "images": 3 * len(fs),
        "backbone": encoder.identity, "image_size": encoder.image_size, "batch_size": params.train.batch_size,
        "steps_per_epoch": steps, "repeats": args.repeats,
        "epoch": ep, "epoch_ratio_best": round(ep["re-encode"]["best_s"] / ep["cached"]["best_s"], 1),
        "epoch_ratio_median": round(ep["re-encode"]["median_s"] / ep["cached"]["median_s"], 1),
    }
    if args.train_repeats:
        tr = {k: _stats(v) for k, v in runs.items()}
        result.update({"train_repeats": args.train_repeats, "train_steps": total_steps, "epochs": params.train.epochs,
                       "train": tr, "train_ratio_best": round(tr["cold"]["best_s"] / tr["warm"]["best_s"], 1)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"{len(fs)} train groups ({3 * len(fs)} images), {steps} steps per epoch, torch threads "
          f"{result['torch_threads']}, load average {result['load_average_start']} -> {result['load_average_end']}")
    print("\n| case | best s | median s | runs |\n|---|---:|---:|---:|")
    rows = [(f"epoch, {k}", v, args.repeats) for k, v in ep.items()]
    if args.train_repeats:
        rows += [(f"train() {result['train_steps']} steps, {k} cache", v, args.train_repeats)
                 for k, v in result["train"].items()]
    for name, v, n in rows:
        print(f"| {name} | {v['best_s']:.2f} | {v['median_s']:.2f} | {n} |")
    print(f"\nepoch: re-encode / cached = {result['epoch_ratio_best']}x (best), {result['epoch_ratio_median']}x (median)")
    if args.train_repeats:
        print(f"train(): cold / warm = {result['train_ratio_best']}x (best)")


if __name__ == "__main__":
    main()
