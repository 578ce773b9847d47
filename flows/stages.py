"""One Prefect flow per pipeline stage. Each is a thin wrapper: load params, call the library."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os

for _k, _v in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_k, _v)

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402

from flows.runners import retry_transient, task_runner  # noqa: E402

from spotdiff import generate as gen  # noqa: E402
from spotdiff import shards  # noqa: E402
from spotdiff.config import load_params  # noqa: E402
from spotdiff.qa import run_qa  # noqa: E402


@task(name="build-chunk", retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def build_chunk(args: tuple, pool=None) -> gen.ChunkResult:
    """One chunk of groups (``spotdiff.generate.build_chunk``), on the flow's task runner, or in ``pool``'s
    worker processes when one is given (the thread runner's tasks would otherwise share one GIL)."""
    return pool.apply(gen.build_chunk, (args,)) if pool is not None else gen.build_chunk(args)


def _run_generate(params: str, overrides: tuple[str, ...], out: str, progress: bool) -> dict:
    p = load_params(params, overrides)
    chunk = build_chunk.with_options(retries=p.orchestrate.retries)
    bar = create_progress_artifact(0.0, key="generate-progress", description="groups built (%)")

    def mapper(fn, tasks):
        # Results are consumed in task order, so outputs are byte-identical to the library's own process
        # pool whatever runner computed them. At most `window` chunks are in flight or waiting: a future
        # holds its chunk's encoded images until the parent has written them, and holding every chunk of
        # a 10k-group run at once would take gigabytes.
        window = max(2, 2 * p.orchestrate.workers)
        # Thread-runner tasks hand the CPU work to the library's worker processes (measured on the demo:
        # the stage took 1.78x the library's own time with the chunks on the threads themselves, which
        # share one GIL, and 1.12x with the pool); process and Dask runners already run each task in a
        # worker process of their own.
        threads = p.orchestrate.task_runner == "threads"
        pool_ctx = gen.worker_pool(gen.worker_count(p.generate.workers), len(tasks)) if threads \
            else contextlib.nullcontext()
        with pool_ctx as pool:
            queue = iter(tasks)
            pending = collections.deque(chunk.submit(t, pool) for t in itertools.islice(queue, window))
            while pending:
                result = pending.popleft().result()
                pending.extend(chunk.submit(t, pool) for t in itertools.islice(queue, 1))
                yield result

    def on_chunk(done: int, total: int) -> None:
        update_progress_artifact(bar, 100.0 * done / max(1, total))

    return gen.generate(p.generate, out, progress=progress, on_chunk=on_chunk, mapper=mapper).as_dict()


def generate_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), out: str = "data/generated",
                  progress: bool = True) -> dict:
    """Build subject groups into ``out`` from params' ``generate`` section, one Prefect task per chunk on
    the task runner of params ``orchestrate.task_runner``."""
    runner = task_runner(load_params(params, overrides).orchestrate)
    return _generate_flow.with_options(task_runner=runner)(params, overrides, out, progress)


@flow(name="generate", log_prints=True)
def _generate_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), out: str = "data/generated",
                   progress: bool = True) -> dict:
    return _run_generate(params, overrides, out, progress)


@task(name="score-groups")
def score_groups(gen_dir: str, out: str, cfg, embed_cfg, progress: bool) -> dict:
    return run_qa(gen_dir, out, cfg, progress=progress, embed_config=embed_cfg).as_dict()


@flow(name="qa", log_prints=True)
def qa_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), gen_dir: str = "data/generated",
            out: str = "data/qa", progress: bool = True) -> dict:
    """Score generated groups, quarantine failures with reasons, write the QA report."""
    p = load_params(params, overrides)
    return score_groups(gen_dir, out, p.qa, p.embed, progress)


@task(name="write-shards")
def write_shards(gen_dir: str, out: str, cfg, accepted: str | None) -> dict:
    return shards.shard(gen_dir, out, cfg, accepted).__dict__


@flow(name="shard", log_prints=True)
def shard_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), gen_dir: str = "data/generated",
               out: str = "data/shards", accepted: str | None = None) -> dict:
    """Shard the generated groups (only QA-accepted ones when ``accepted`` is given) into WebDataset tars."""
    cfg = load_params(params, overrides).shard
    return write_shards(gen_dir, out, cfg, accepted)


@task(name="train-encoder")
def train_encoder(shard_dir: str, out: str, p, progress: bool, checkpoint: str | None = None) -> dict:
    from spotdiff.train import train

    return train(shard_dir, out, p, progress=progress, checkpoint_path=checkpoint).as_dict()


@flow(name="train", log_prints=True)
def train_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), shard_dir: str = "data/shards",
               out: str = "data/train", progress: bool = True, checkpoint: str | None = None) -> dict:
    """Train the SpotDiff encoder (stage 1; stage 2 when ``train.stage2.model`` is set)."""
    return train_encoder(shard_dir, out, load_params(params, overrides), progress, checkpoint)


@task(name="evaluate-features")
def evaluate_features(shard_dir: str, model_dir: str, out: str, p, progress: bool) -> dict:
    from spotdiff.evaluate.run import evaluate, headline

    return headline(evaluate(shard_dir, model_dir, out, p, photos=p.evaluate.photos, progress=progress))


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), shard_dir: str = "data/shards",
                  model_dir: str = "data/train", out: str = "data/eval", progress: bool = True) -> dict:
    """Orthogonality, invariance, retrieval and leakage of the subject feature vs the raw backbone."""
    return evaluate_features(shard_dir, model_dir, out, load_params(params, overrides), progress)
