"""Peak memory of building one split's feature cache (``model.cache.build``), traced by ``tracemalloc``.

    .venv/bin/python bench/cache_build_memory.py [--shards data/shards] [--split train]

Prints the features' size, the traced peak (numpy's allocations and the decode's; torch's own allocator is not
traced), the process's peak RSS (everything, imports and the model included) and the sha256 of the feature
bytes, so a change to the build can be shown to keep the same features. To compare with older code, run this
script with ``PYTHONPATH`` at a worktree of that commit.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
import tracemalloc

import spotdiff  # noqa: F401  (first: the CPU pins)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--split", default="train")
    ap.add_argument("-p", "--params", default="params.yaml")
    args = ap.parse_args(argv)

    from spotdiff.common.shardset import split_tars
    from spotdiff.config import load_params
    from spotdiff.model import cache
    from spotdiff.model.embed import ImageEncoder

    encoder = ImageEncoder.from_config(load_params(args.params).embed)
    tars = split_tars(args.shards, args.split)
    tracemalloc.start()
    t0 = time.perf_counter()
    fs = cache.build(tars, encoder)
    _, peak = tracemalloc.get_traced_memory()
    print(f"{args.split}: {len(fs)} groups, features {fs.features.nbytes / 2**20:.1f} MiB, traced peak "
          f"{peak / 2**20:.1f} MiB, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
          f"{time.perf_counter() - t0:.1f} s, sha256 {hashlib.sha256(fs.features.tobytes()).hexdigest()}")
    print(f"code: {cache.__file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
