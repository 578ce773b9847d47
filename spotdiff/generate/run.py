"""``generate`` stage: build subject groups (anchor, bg, pose) from the configured sources.

Data flow: ``plan`` splits ``n_groups`` between sources by weight and gives every group a
``Job`` with its own seed; jobs are cut into chunks of ``chunk_size``; each chunk is built
in a worker process (``build_chunk``) and written by the parent as one WebDataset tar
under ``<out>/chunks/``; the parent collects per-group records and rejects and writes
``records.parquet``, ``rejects.parquet`` and ``stats.json`` last (the "done" marker).

Output is a pure function of the params: chunk tars are byte-identical whatever the
number of workers or the order in which chunks finish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from spotdiff import __version__

from spotdiff.generate import segment

from spotdiff.generate import sources
from spotdiff.generate.background.bank import BackgroundBank
from spotdiff.generate.background.composite import Layer, composite, resize_layer
from spotdiff.config import GenerateConfig, Params
from spotdiff.common.images import BadInput
from spotdiff.generate.pose import landmarks
from spotdiff.common.record import SubjectGroup, View
from spotdiff.common.diffusion import harmonise, load_pipeline
from spotdiff.common.seeding import derive_seed, rng as seeded_rng
from spotdiff.generate.segment.sam import register_sam
from spotdiff.common.pool import run_parallel, worker_count
from spotdiff.common.outputs import reset_dir
from spotdiff.common.tars import member_digests
from spotdiff.generate.resume import ChunkStore

log = logging.getLogger(__name__)


def split_counts(weights: dict[str, float], total: int) -> dict[str, int]:
    """Split ``total`` by weight with the largest-remainder rule (exact sum, stable order)."""
    active = {k: w for k, w in weights.items() if w > 0}
    wsum = sum(active.values())
    exact = {k: total * w / wsum for k, w in active.items()}
    counts = {k: int(v) for k, v in exact.items()}
    left = total - sum(counts.values())
    for k in sorted(active, key=lambda k: (-(exact[k] - counts[k]), k))[:left]:
        counts[k] += 1
    return counts


def plan(cfg: GenerateConfig) -> list[sources.Job]:
    """Every group's job, in a fixed order (sources in params order, then index)."""
    jobs: list[sources.Job] = []
    for name, count in split_counts(cfg.sources, cfg.n_groups).items():
        jobs += sources.get(name).plan(cfg, count, len(jobs))
    return jobs


def inventory(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """Reject rows for what the sources found but cannot use, known before any job runs: a photo
    folder's FIFOs, devices, dangling links, unreadable folders (a source's optional ``inventory``)."""
    rows: list[dict[str, Any]] = []
    for name in split_counts(cfg.sources, cfg.n_groups):
        source = sources.get(name)
        if hasattr(source, "inventory"):
            rows += source.inventory(cfg)
    return rows


def chunked(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _placement(rng: np.random.Generator, cfg: GenerateConfig) -> tuple[int, tuple[float, float]]:
    """Subject side in pixels and centre jitter in image fractions."""
    lo, hi = cfg.placement.scale
    side = round(rng.uniform(lo, hi) * cfg.image_size)
    j = cfg.placement.jitter
    return side, (float(rng.uniform(-j, j)), float(rng.uniform(-j, j)))


def _centre(layer: Layer, jitter: tuple[float, float], size: int) -> tuple[float, float]:
    """Jittered centre, clipped so the whole layer stays on the canvas where it fits."""
    w, h = layer.size
    out = []
    for extent, j in ((w, jitter[0]), (h, jitter[1])):
        c = size * (0.5 + j)
        lo, hi = extent / 2, size - extent / 2
        out.append(float(np.clip(c, lo, hi)) if lo <= hi else size / 2)
    return out[0], out[1]


def _fit(layer: Layer, factor: float, size: int) -> Layer:
    """Resize by ``factor`` but never beyond the canvas."""
    w, h = layer.size
    factor = min(factor, size / max(w, h))
    return resize_layer(layer, factor)


class GroupBuilder:
    """Builds one ``SubjectGroup`` from a ``Job``: source layers, placement, backgrounds."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        folder = Path(cfg.background_folder) if cfg.background_folder else None
        self.bank = BackgroundBank(dict(cfg.backgrounds), cfg.image_size, folder, diffusion=cfg.diffusion)
        self.inpaint = None
        if cfg.sources.get("diffusion", 0) > 0:  # load now: missing weights stop the run at start-up
            load_pipeline(cfg.diffusion.model, "text2img", cfg.diffusion.device)
        if cfg.diffusion.inpaint:
            self.inpaint = load_pipeline(cfg.diffusion.inpaint_model, "inpaint", cfg.diffusion.device)
        register_sam(cfg.sam)  # per process: workers are spawned, registries start empty there
        if cfg.segment == "sam":
            # Build now, outside the per-group try: a bad checkpoint stops the run with a
            # ConfigError instead of becoming one internal_error reject per photo.
            segment.get("sam")
        if cfg.pose.landmarks and cfg.pose.landmarks_model:
            landmarks.detector(cfg.pose.landmarks_model)  # same: a bad asset path stops the run here

    def __call__(self, job: sources.Job) -> SubjectGroup:
        cfg, size = self.cfg, self.cfg.image_size
        rng = seeded_rng(job.seed, "layers")
        side, jitter = _placement(seeded_rng(job.seed, "placement"), cfg)
        subject = sources.get(job.source).layers(job, cfg, rng, side)
        factor = side / max(subject.anchor.size)
        anchor = _fit(subject.anchor, factor, size)
        pose = _fit(subject.pose, factor * subject.pose_scale, size)
        centre = _centre(anchor, jitter, size)
        pose_centre = _centre(pose, jitter, size)
        b0, b0_id = self.bank.draw(seeded_rng(job.seed, "bg0").integers(1 << 62))
        b1, b1_id = self.bank.draw(seeded_rng(job.seed, "bg1").integers(1 << 62), exclude=b0_id)
        views, points = {}, {}
        for name, bg, layer, c in (("anchor", b0, anchor, centre), ("bg", b1, anchor, centre),
                                   ("pose", b0, pose, pose_centre)):
            rgb, mask, points[name] = composite(bg, layer, c)
            if self.inpaint is not None:  # repaint only the outline band so light and edges blend
                rgb = harmonise(self.inpaint, rgb, mask, cfg.diffusion.inpaint_band,
                                derive_seed(job.seed, "harmonise", name), subject.caption,
                                steps=cfg.diffusion.steps, guidance=cfg.diffusion.guidance)
            views[name] = View(rgb, mask)
        meta = {
            "source": job.source,
            "item": job.item,
            "index": job.index,
            **subject.meta,
            "background": {"B0": b0_id, "B1": b1_id},
            "placement": {"side": side, "center": [round(v, 2) for v in centre],
                          "pose_center": [round(v, 2) for v in pose_centre]},
            "seed": job.seed,
            "image_size": size,
            "versions": versions(),
        }
        if self.inpaint is not None:
            meta["harmonise"] = {"model": self.inpaint.spotdiff_identity, "band": cfg.diffusion.inpaint_band}
        if subject.anchor.points is not None:
            meta["landmarks"] = {name: landmarks.record(p) for name, p in points.items()}
        return SubjectGroup(job.key, job.subject_id, job.class_name, subject.caption, views, meta)


_VERSIONS: dict[str, str] = {}


def versions() -> dict[str, str]:
    """Versions of the code that shapes pixels, recorded in every group."""
    if not _VERSIONS:
        import cv2
        import PIL

        _VERSIONS.update(spotdiff=__version__, numpy=np.__version__, opencv=cv2.__version__, pillow=PIL.__version__)
    return _VERSIONS


@dataclass
class ChunkResult:
    index: int
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    """Encoded groups, written to the chunk tar by the parent (I/O stays out of the workers)."""
    seconds: float = 0.0


_builder: GroupBuilder | None = None


def _worker_builder(cfg: GenerateConfig) -> GroupBuilder:
    global _builder
    if _builder is None or _builder.cfg != cfg:
        _builder = GroupBuilder(cfg)
    return _builder


def build_chunk(args: tuple[int, list[sources.Job], GenerateConfig]) -> ChunkResult:
    """Build and encode one chunk's groups. Runs in a worker."""
    index, jobs, cfg = args
    t0 = time.perf_counter()
    builder = _worker_builder(cfg)
    result = ChunkResult(index)
    shard = f"chunk-{index:06d}.tar"
    for job in jobs:
        try:
            group = builder(job)
            members = group.encode(cfg.jpeg_quality)
        except BadInput as err:
            result.rejects.append(_reject(job, err.reason, err.detail))
            continue
        except Exception as err:  # noqa: BLE001 -- one bad group must not sink the run; it is counted
            # where it failed as file:line of the last frames, not full paths of this machine's installation
            frames = ", ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in traceback.extract_tb(err.__traceback__)[-3:])
            detail = f"{type(err).__name__}: {err} (at {frames})"
            result.rejects.append(_reject(job, "internal_error", detail))
            continue
        result.samples.append((group.key, members))
        result.records.append({"key": group.key, "subject_id": group.subject_id, "class": group.class_name,
                               "source": job.source, "item": job.item, "chunk": shard,
                               "bytes": sum(len(v) for v in members.values()),
                               "json": members["json"].decode(),
                               "members": [{"name": n, "sha256": d} for n, d in member_digests(members).items()]})
    result.seconds = time.perf_counter() - t0
    return result


def _reject(job: sources.Job, reason: str, detail: str) -> dict[str, Any]:
    return {"key": job.key, "subject_id": job.subject_id, "source": job.source, "item": job.item,
            "reason": reason, "detail": detail}


@dataclass
class GenerateStats:
    groups_in: int
    kept: int
    rejected: int
    rejected_by_reason: dict[str, int]
    by_source: dict[str, dict[str, int]]
    seconds: float
    worker_seconds: float
    out_dir: str
    resumed_chunks: int = 0
    """Chunks taken from an interrupted run (not in stats.json: the output does not depend on it)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        resumed = f" ({self.resumed_chunks} chunks resumed)" if self.resumed_chunks else ""
        return (f"generate: {self.groups_in} groups in, {self.kept} kept, {self.rejected} rejected "
                f"{self.rejected_by_reason or ''} in {self.seconds:.1f} s{resumed} -> {self.out_dir}")


ChunkMapper = Callable[[Callable, list], Iterator]
"""``mapper(build_chunk, tasks)`` yields ``build_chunk(task)`` for every task, in task order, computed
anywhere (spawned processes by default; Prefect tasks on threads, processes or Dask from ``flows/``)."""


def generate(cfg: GenerateConfig, out_dir: str | Path, progress: bool = True,
             on_chunk: Callable[[int, int], None] | None = None, mapper: ChunkMapper | None = None,
             resume: bool = True) -> GenerateStats:
    """Build every group into ``out_dir`` (emptied first). Returns counts that reconcile:
    ``groups_in == kept + rejected``, where ``groups_in`` counts the jobs and the sources' inventory
    rejects. ``on_chunk(done_groups, total)`` reports progress. ``mapper`` runs the chunks (default:
    ``run_parallel`` on ``cfg.workers`` processes); the output bytes do not depend on it, because every
    chunk is seeded by its jobs alone and results are consumed in task order.

    ``resume`` (default True): chunks an interrupted run with the same params and code finished are taken
    from ``<out_dir>.partial/`` instead of built again (``spotdiff.generate.resume``); False discards them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from spotdiff.common.progress import progress_bar

    t0 = time.perf_counter()
    out = reset_dir(out_dir)  # a link or mount point is emptied and written through
    (out / "chunks").mkdir()
    store = ChunkStore(out, cfg, fresh=not resume)
    finished = store.finished()
    jobs = plan(cfg)
    chunks = list(chunked(jobs, cfg.chunk_size))
    tasks = [(i, chunk, cfg) for i, chunk in enumerate(chunks) if i not in finished]
    if finished:
        log.info("generate: %d of %d chunks finished by an interrupted run are reused from %s",
                 len(chunks) - len(tasks), len(chunks), store.dir)
    records: list[dict] = []
    rejects: list[dict] = inventory(cfg)  # inputs never turned into jobs still count: in = kept + rejected
    entries = len(rejects)
    worker_seconds = 0.0
    bar = progress_bar(len(jobs), unit="group", desc="generate", enabled=progress)
    if mapper is None:
        mapper = lambda fn, ts: run_parallel(fn, ts, worker_count(cfg.workers))  # noqa: E731
    # closing: an exception here (Ctrl-C, a full disk) ends the mapper's workers at once, not at garbage collection
    with contextlib.closing(mapper(build_chunk, tasks)) as results:
        built = iter(results)
        for index in range(len(chunks)):  # in chunk order, reused or built: the same records either way
            if index in finished:
                done = finished[index]
            else:
                res = next(built)
                done = {"records": res.records, "rejects": res.rejects, "seconds": res.seconds}
                store.save(res.index, res.samples, **done)
            records += done["records"]
            rejects += done["rejects"]
            worker_seconds += done["seconds"]
            bar.update(len(done["records"]) + len(done["rejects"]))
            if on_chunk:
                on_chunk(len(records) + len(rejects), len(jobs))
    bar.close()
    store.finish(out / "chunks")
    pq.write_table(pa.Table.from_pylist(records, schema=_RECORD_SCHEMA), out / "records.parquet")
    pq.write_table(pa.Table.from_pylist(rejects, schema=_REJECT_SCHEMA), out / "rejects.parquet")
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    by_source: dict[str, dict[str, int]] = {}
    for row, kind in [(r, "kept") for r in records] + [(r, "rejected") for r in rejects]:
        counts = by_source.setdefault(row["source"], {"in": 0, "kept": 0, "rejected": 0})
        counts["in"] += 1
        counts[kind] += 1
    stats = GenerateStats(len(jobs) + entries, len(records), len(rejects), dict(sorted(by_reason.items())),
                          by_source, round(time.perf_counter() - t0, 3), round(worker_seconds, 3), str(out),
                          resumed_chunks=len(chunks) - len(tasks))
    assert stats.groups_in == stats.kept + stats.rejected, "every job and inventory entry is kept or rejected"
    if "internal_error" in by_reason:
        log.warning("%d groups failed with internal errors; see %s", by_reason["internal_error"], out / "rejects.parquet")
    # Counts only: wall times and paths differ between runs, and this file's hash enters dvc.lock (and the
    # release that ships it); they stay in the returned stats.
    stable = {k: v for k, v in stats.as_dict().items() if k not in ("seconds", "worker_seconds", "out_dir", "resumed_chunks")}
    (out / "stats.json").write_text(json.dumps(stable, indent=2, sort_keys=True) + "\n")
    return stats


def _schema(*names: str, ints: Iterable[str] = ()) -> Any:
    import pyarrow as pa

    members = pa.list_(pa.struct([("name", pa.string()), ("sha256", pa.string())]))
    return pa.schema([(n, pa.int64() if n in ints else members if n == "members" else pa.string()) for n in names])


_RECORD_SCHEMA = _schema("key", "subject_id", "class", "source", "item", "chunk", "bytes", "json", "members",
                         ints=("bytes",))
_REJECT_SCHEMA = _schema("key", "subject_id", "source", "item", "reason", "detail")


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True,
        on_chunk: Callable[[int, int], None] | None = None, mapper: ChunkMapper | None = None,
        no_resume: bool = False) -> GenerateStats:
    """The stage (``spotdiff.stages``): params ``generate`` -> ``paths["out"]``. ``on_chunk`` and
    ``mapper`` as in ``generate``; ``no_resume``: build every chunk even if an interrupted run finished some."""
    return generate(params.generate, paths["out"], progress=progress, on_chunk=on_chunk, mapper=mapper,
                    resume=not no_resume)
