"""Stream subject groups from the shard stage's WebDataset tars, for training on images.

``GroupStream`` (also built by ``stream_groups``) is a ``torch.utils.data.IterableDataset`` over the
tars of one split (``shard_urls``), built on webdataset 1.0.2's pipeline stages (tar reading, sample
grouping, shuffle buffer, resampled shard lists). Each item is one subject group::

    {"key": str, "subject_id": str, "class": str, "caption": str, "record": dict (the json member),
     "shard": str (tar file name), "images": {view: uint8 (H, W, 3)}, "masks": {view: uint8 (H, W)}}

(``masks`` only with ``masks=True``; the arrays are read-only: copy one before writing to it).
``collate_groups`` stacks a batch into uint8 tensors (B, views, H, W, 3) and ``group_loader`` makes
the ``DataLoader``.

Splitting, so no group is read twice by accident:

* ranks: ``rank``/``world_size`` given, else ``torch.distributed``'s when it is initialised at
  construction time, else one rank. A plain (non-resampled) stream gives each rank a disjoint slice of
  the shards (``node_shards``); a resampled stream lets every rank draw from all shards with its own
  seed, so ranks draw different samples.
* DataLoader workers: each worker reads a disjoint slice of its rank's shards (plain), or draws with a
  seed of its own (resampled); ``epoch_length`` is divided among them, so a rank yields exactly
  ``epoch_length`` groups per epoch whatever the worker count.

Determinism: every shuffle and draw is seeded by ``derive_seed(seed, what, epoch, rank, worker)``.
With ``num_workers=0`` the same seed and epoch give the same sequence of keys; ``set_epoch`` changes
the order between epochs (call it before each epoch, as with ``DistributedSampler``).

Bad samples never stop a stream: a shard that cannot be opened, a damaged tar, a missing member, an
unparsable ``json`` or an undecodable image is skipped and counted by reason (``REASONS``), with one
logged warning per reason per stream. The counts are shared with DataLoader worker processes
(torch shared memory) and read with ``stream.skipped`` (per rank: each rank has its own stream);
every worker logs a summary line (INFO) at the end of its part of an epoch. A resampled or cycling
stream that opens many shards in a row without one usable group raises ``RuntimeError`` instead of
looping forever.
"""

from __future__ import annotations

import io
import json
import logging
import random
from functools import partial
from itertools import count, islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from spotdiff.sample import VIEWS
from spotdiff.seeding import derive_seed

log = logging.getLogger(__name__)

REASONS = ("shard_unreadable", "tar_corrupt", "group_error", "missing_member", "bad_json", "corrupt_image")
"""Why a sample was skipped: the shard could not be opened; the tar stream broke (the rest of that
shard is lost); webdataset could not group members (e.g. a duplicate name); a needed member is absent;
the json member is not a JSON object with ``subject_id``; an image member does not decode."""


def shard_urls(shard_dir: str | Path, split: str) -> list[str]:
    """Paths of ``split``'s shards (``{split}-NNNNNN.tar``) in ``shard_dir``, in name order, as listed
    in the folder's ``SHA256SUMS`` (the shard stage's manifest; the feature cache reads the same list,
    ``cache.split_tars``, so streaming and caching never disagree on what a split holds).

    Raises ``FileNotFoundError`` naming the folder and split when there are none.
    """
    from spotdiff.model.cache import split_tars

    folder = Path(shard_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"shard folder {folder} does not exist (run `spotdiff shard` first)")
    return [str(path) for path, _ in split_tars(folder, split)]


def node_shards(urls: Sequence[str], rank: int, world_size: int, *, seed: int, epoch: int,
                shuffle: bool) -> list[str]:
    """The shards rank ``rank`` of ``world_size`` reads in one pass of a plain (non-resampled) stream.

    Every rank shuffles the full list with the same seed and epoch (or keeps it when ``shuffle`` is
    False) and takes every ``world_size``-th shard from its own offset: the ranks' lists are disjoint
    and together cover every shard once. Raises ``ValueError`` when a rank would get no shard.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if len(urls) < world_size:
        raise ValueError(f"{len(urls)} shards for {world_size} ranks: rank {rank} would read nothing; write more, "
                         f"smaller shards (shard.max_samples) or stream with resampled=True")
    order = list(urls)
    if shuffle:
        random.Random(derive_seed(seed, "shards", epoch)).shuffle(order)
    return order[rank::world_size]


def _share(total: int, parts: int, index: int) -> int:
    """``index``'s share when ``total`` is split into ``parts`` near-equal integer parts."""
    return total // parts + (1 if index < total % parts else 0)


class SkipCounts:
    """Skipped samples by reason, in shared memory so DataLoader worker processes add to one tally.

    A torch shared-memory table with one row per process (row 0: the process that iterates with
    ``num_workers=0``; row 1 + id: DataLoader worker ``id``, modulo ``SLOTS - 1``), so no lock is needed
    and it travels to workers started by fork, spawn or forkserver alike. Each reason is logged once
    per stream: a process warns only when no row has warned about that reason yet (two workers meeting
    a reason at the same instant may both warn).
    """

    SLOTS = 64

    def __init__(self) -> None:
        # columns: count per reason, then warned flag per reason
        self._table = torch.zeros(self.SLOTS, 2 * len(REASONS), dtype=torch.int64).share_memory_()

    def add(self, reason: str, detail: str) -> None:
        i = REASONS.index(reason)
        info = torch.utils.data.get_worker_info()
        row = self._table[0 if info is None else 1 + info.id % (self.SLOTS - 1)]
        row[i] += 1
        warned = len(REASONS) + i
        if not bool(self._table[:, warned].any()):
            row[warned] = 1
            log.warning("skipping a sample: %s: %s (further %s samples are counted in stream.skipped, "
                        "not logged)", reason, detail, reason)

    def as_dict(self) -> dict[str, int]:
        """Non-zero counts by reason."""
        totals = self._table[:, :len(REASONS)].sum(0).tolist()
        return {r: int(n) for r, n in zip(REASONS, totals) if n}

    def reset(self) -> None:
        """Zero the counts (warnings already given stay given)."""
        self._table[:, :len(REASONS)] = 0


class BadSample(Exception):
    """A sample that cannot be used: ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def decode_image(data: bytes, mode: str = "RGB", size: int | None = None,
                 resample: int = Image.BICUBIC) -> np.ndarray:
    """Encoded image bytes as a read-only uint8 array in PIL ``mode`` (RGB: (H, W, 3); L: (H, W)),
    resized to ``size`` x ``size`` with ``resample`` when ``size`` is given and differs."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # the full decode: truncated or damaged data raises here
        out = im if im.mode == mode else im.convert(mode)  # convert() to the same mode would copy
        if size is not None and out.size != (size, size):
            out = out.resize((size, size), resample)
        # read-only (a view of PIL's bytes): np.array's extra copy costs ~20% of a 256 px JPEG decode
        return np.asarray(out)


def decode_group(sample: dict[str, Any], views: Sequence[str] = VIEWS, decode_size: int | None = None,
                 masks: bool = False) -> dict[str, Any]:
    """One raw webdataset sample (``__key__`` + member bytes) as the stream's item; see the module doc.

    ``decode_size``: every image is resized to decode_size x decode_size pixels (PIL bicubic; masks
    bilinear, which never rings), stretching non-square images; None keeps the stored size. The caption
    is the ``txt`` member, or the record's ``caption`` when ``txt`` is absent. Raises ``BadSample``.
    """
    key = sample.get("__key__", "?")
    if "json" not in sample:
        raise BadSample("missing_member", f"{key}: json")
    try:
        record = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as err:
        raise BadSample("bad_json", f"{key}: {err}") from None
    if not isinstance(record, dict) or "subject_id" not in record:
        raise BadSample("bad_json", f"{key}: not an object with a subject_id")
    names = [f"{v}.jpg" for v in views] + ([f"{v}.mask.png" for v in views] if masks else [])
    missing = [n for n in names if n not in sample]
    if missing:
        raise BadSample("missing_member", f"{key}: {', '.join(missing)}")
    out: dict[str, Any] = {"images": {}}
    for view in views:
        for name, mode, resample, dest in ((f"{view}.jpg", "RGB", Image.BICUBIC, "images"),
                                           (f"{view}.mask.png", "L", Image.BILINEAR, "masks")):
            if dest == "masks" and not masks:
                continue
            try:
                out.setdefault(dest, {})[view] = decode_image(sample[name], mode, decode_size, resample)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise BadSample("corrupt_image", f"{key}: {name}: {err}") from None
    txt = sample.get("txt")
    caption = txt.decode("utf-8", "replace") if isinstance(txt, bytes) else str(record.get("caption", ""))
    url = str(sample.get("__url__", ""))
    return {"key": key, "subject_id": str(record["subject_id"]), "class": str(record.get("class", "")),
            "caption": caption, "record": record, "shard": url.rsplit("/", 1)[-1], **out}


class _Pass:
    """Book-keeping of one worker's part of one epoch: skips, yields, and the runaway guard."""

    def __init__(self, stream: GroupStream, where: str, guard: int | None):
        self.stream, self.where, self.guard = stream, where, guard
        self.skipped: dict[str, int] = {}
        self.yielded = 0
        self.shards_since_good = 0
        self.current, self.shard_failed = "", False

    def bad(self, reason: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.stream._skips.add(reason, detail)

    def handler(self, reason: str, exn: Exception) -> bool:
        """A webdataset exception handler: count and continue (webdataset's default re-raises).

        A shard-level failure counts once per shard read, though webdataset may report a broken tar
        stream twice (once for the member being read, once for the stream)."""
        if reason in ("shard_unreadable", "tar_corrupt"):
            if self.shard_failed:
                return True
            self.shard_failed = True
        name = self.current.rsplit("/", 1)[-1]
        why = getattr(exn, "strerror", None) or (exn.args[0] if exn.args else "")
        self.bad(reason, f"{name}: {type(exn).__name__}: {why}"[:500])
        return True

    def urls(self, source: Iterable[str]) -> Iterator[dict[str, str]]:
        # The stages are lazy generators: the next url is pulled only once the previous shard is
        # done, so ``current`` is the shard a handler call is about.
        for url in source:
            self.current, self.shard_failed = url, False
            self.shards_since_good += 1
            if self.guard is not None and self.shards_since_good > self.guard:
                raise RuntimeError(f"{self.where}: {self.shards_since_good - 1} shards in a row gave no usable "
                                   f"group (skipped so far: {self.skipped or 'none'}); check the shards")
            yield {"url": url}

    def decode(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        s = self.stream
        for sample in samples:
            try:
                item = decode_group(sample, s.views, s.decode_size, s.masks)
            except BadSample as err:
                self.bad(err.reason, f"{str(sample.get('__url__', '?')).rsplit('/', 1)[-1]}/{err.detail}")
                continue
            self.shards_since_good = 0
            self.yielded += 1
            yield item


class GroupStream(torch.utils.data.IterableDataset):
    """Subject groups streamed from WebDataset shards; see the module docstring.

    Args:
        urls: shard paths (``shard_urls``), in a fixed order.
        epoch_length: groups per rank per epoch. None: one pass over the rank's shards (plain), or an
            endless stream (resampled). With a plain stream, the rank's shards are cycled until exactly
            ``epoch_length`` groups came (equal epochs on every rank, as DDP needs).
        seed: root of every shuffle and draw.
        resampled: draw shards with replacement (webdataset ``ResampledShards``) instead of reading
            each once.
        decode_size: resize every image to this many pixels square (PIL bicubic); None keeps stored size.
        shuffle_buffer: groups held in webdataset's shuffle buffer (raw bytes, before decoding). 0: file
            order, and a plain stream keeps the shard order too; 1: shard order shuffled, no buffer.
        views: which views to decode, in this order (subset of ``sample.VIEWS``).
        masks: also decode each view's mask (uint8 (H, W), 255 = subject) into ``item["masks"]``.
        rank, world_size: this process's place among ranks; both None: ``torch.distributed``'s when it
            is initialised now, else a single rank.
    """

    def __init__(self, urls: Sequence[str], *, epoch_length: int | None = None, seed: int = 0,
                 resampled: bool = False, decode_size: int | None = None, shuffle_buffer: int = 0,
                 views: Sequence[str] = VIEWS, masks: bool = False, rank: int | None = None,
                 world_size: int | None = None):
        super().__init__()
        if isinstance(urls, (str, Path)):
            raise TypeError("urls must be a list of shard paths (see shard_urls), not one string")
        self.urls = [str(u) for u in urls]
        if not self.urls:
            raise ValueError("GroupStream needs at least one shard url")
        self.views = tuple(views)
        if not self.views or len(set(self.views)) != len(self.views) or not set(self.views) <= set(VIEWS):
            raise ValueError(f"views {self.views} must be distinct names from {VIEWS}")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1 or None, got {epoch_length}")
        if decode_size is not None and decode_size < 1:
            raise ValueError(f"decode_size must be >= 1 or None, got {decode_size}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.epoch_length, self.seed, self.resampled = epoch_length, int(seed), bool(resampled)
        self.decode_size, self.shuffle_buffer, self.masks = decode_size, int(shuffle_buffer), bool(masks)
        self.rank, self.world_size = _node_info(rank, world_size)
        if not self.resampled:
            node_shards(self.urls, self.rank, self.world_size, seed=0, epoch=0, shuffle=False)  # fail early
        self._members = {"json", "txt", *(f"{v}.jpg" for v in self.views),
                         *((f"{v}.mask.png" for v in self.views) if self.masks else ())}
        self.epoch = 0
        self._skips = SkipCounts()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shard order, shuffle and draws the next iteration uses."""
        self.epoch = int(epoch)

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped so far by every worker of this stream, by reason (non-zero only)."""
        return self._skips.as_dict()

    def reset_skipped(self) -> None:
        self._skips.reset()

    def __len__(self) -> int:
        if self.epoch_length is None:
            raise TypeError("GroupStream without epoch_length has no fixed length")
        return self.epoch_length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        where = f"rank {self.rank}/{self.world_size} worker {worker}/{workers} epoch {self.epoch}"
        quota = None if self.epoch_length is None else _share(self.epoch_length, workers, worker)
        shuffle = self.shuffle_buffer > 0
        if self.resampled:
            seed = derive_seed(self.seed, "resample", self.epoch, self.rank, worker)
            source: Iterable[str] = (d["url"] for d in wds.ResampledShards(
                self.urls, worker_seed=lambda: seed, deterministic=True))
            endless = True
        else:
            mine = node_shards(self.urls, self.rank, self.world_size, seed=self.seed, epoch=self.epoch,
                               shuffle=shuffle)
            active = min(workers, len(mine))  # workers beyond the shard count read nothing
            if worker >= active:
                log.info("%s: no shard left for this worker (%d shards, %d workers)", where, len(mine), workers)
                return
            if quota is not None:
                quota = _share(self.epoch_length, active, worker)
            source = mine[worker::workers]
            endless = self.epoch_length is not None
            if endless:
                source = self._cycle(list(source), worker, shuffle)
        # more shards in a row than the buffer can swallow, each without one usable group: give up
        pass_ = _Pass(self, where, 4 * len(self.urls) + 16 + self.shuffle_buffer if endless else None)
        stages: list[Any] = [
            partial(pass_.urls, source),
            partial(url_opener, handler=partial(pass_.handler, "shard_unreadable")),
            partial(tar_file_expander, handler=partial(pass_.handler, "tar_corrupt"), select_files=self._wanted),
            partial(group_by_keys, handler=partial(pass_.handler, "group_error")),
        ]
        if self.shuffle_buffer > 1:
            rng = random.Random(derive_seed(self.seed, "buffer", self.epoch, self.rank, worker))
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages.append(pass_.decode)
        items = iter(wds.DataPipeline(*stages))
        yield from (items if quota is None else islice(items, quota))
        log.info("%s: %d groups, skipped %s", where, pass_.yielded, pass_.skipped or "none")

    def _wanted(self, fname: str) -> bool:
        """Whether a tar member is used: members of views or masks not asked for are never read."""
        suffix = fname.rsplit("/", 1)[-1].partition(".")[2]
        return suffix in self._members

    def _cycle(self, shards: list[str], worker: int, shuffle: bool) -> Iterator[str]:
        """This worker's shards over and over (reshuffled each round when shuffling)."""
        for k in count():
            if k and shuffle:
                random.Random(derive_seed(self.seed, "cycle", self.epoch, self.rank, worker, k)).shuffle(shards)
            yield from shards


def stream_groups(urls: Sequence[str], *, epoch_length: int | None, seed: int, resampled: bool,
                  decode_size: int | None, shuffle_buffer: int, views: Sequence[str] = VIEWS,
                  masks: bool = False, rank: int | None = None, world_size: int | None = None) -> GroupStream:
    """A ``GroupStream`` with every choice spelled out (the form training code calls)."""
    return GroupStream(urls, epoch_length=epoch_length, seed=seed, resampled=resampled, decode_size=decode_size,
                       shuffle_buffer=shuffle_buffer, views=views, masks=masks, rank=rank, world_size=world_size)


def _node_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return int(rank), int(world_size)


def collate_groups(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of stream items: ``images`` uint8 tensor (B, V, H, W, 3) in the items' view order,
    ``masks`` uint8 (B, V, H, W) when the items carry masks, and lists ``keys``, ``subject_ids``,
    ``classes``, ``captions``, ``records``; ``views`` names the V axis.

    Raises ``ValueError`` when the images differ in size (set the stream's ``decode_size``).
    """
    if not items:
        raise ValueError("collate_groups got an empty batch")
    views = tuple(items[0]["images"])
    out: dict[str, Any] = {"views": views}
    for field in ("images", "masks"):
        if field not in items[0]:
            continue
        arrays = [item[field][v] for item in items for v in views]
        if len({a.shape for a in arrays}) != 1:
            sizes = sorted({a.shape[:2] for a in arrays})
            raise ValueError(f"cannot stack {field} of sizes {sizes}: give the stream a decode_size")
        stacked = torch.from_numpy(np.stack(arrays))
        out[field] = stacked.reshape(len(items), len(views), *stacked.shape[1:])
    out["keys"] = [i["key"] for i in items]
    out["subject_ids"] = [i["subject_id"] for i in items]
    out["classes"] = [i["class"] for i in items]
    out["captions"] = [i["caption"] for i in items]
    out["records"] = [i["record"] for i in items]
    return out


def group_loader(stream: GroupStream, batch_size: int, *, num_workers: int = 0, drop_last: bool = False,
                 **kwargs: Any) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``stream`` batching with ``collate_groups``; extra ``kwargs`` go to it."""
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                       drop_last=drop_last, collate_fn=collate_groups, **kwargs)
