"""``shard`` stage: WebDataset tars split by subject, with a Parquet index and checksums.

Reads the generate stage's chunk tars (copying member bytes, never re-encoding), puts
every subject in exactly one split by a salted hash of its id (stable as the dataset
grows: adding subjects never moves old ones), and packs each split into tars bounded by
``max_samples`` and ``max_bytes``. Writes, in ``out``:

* ``{split}-NNNNNN.tar``: the shards,
* ``index.parquet``: one row per sample (shard, key, split, subject, class, factor
  labels, byte size and sha256 of every member),
* ``sizes.json``: samples, shards and bytes per split,
* ``SHA256SUMS``: sha256 of every tar (``sha256sum -c`` format),
* ``contact_sheet.png``: anchor | bg | pose | masks for a few groups of every split,
* ``README.md``: a Hugging Face dataset card holding only what ``datasets.load_dataset`` on the folder needs:
  ``configs`` (each split's tars under its Hugging Face name, ``val`` as ``validation``) and
  ``dataset_info.features`` (masks as 8-bit grey images, the ``json`` labels typed by ``record.LABELS``).

Every group's ``json`` record must fit ``record.LABELS`` (an ``InputError`` names the labels that do not): the
cards declare that schema, and a label it lacks would be dropped by every typed reader.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from spotdiff.config import Params, ShardConfig, SplitConfig
from spotdiff.common.outputs import reset_dir
from spotdiff.common.seeding import unit_hash
from spotdiff.common.record import hf_features, label_problems, ordered_members
from spotdiff.common.shardset import HF_SPLITS, SPLITS, hf_configs
from spotdiff.common.generated import recorded_digests
from spotdiff.common.tars import (digest_mismatch, member_digests, read_samples, sha256_bytes, sha256_file,
                                  write_samples)
from spotdiff.errors import InputError, MissingInputError


INDEX_SCHEMA = pa.schema([
    ("shard", pa.string()), ("key", pa.string()), ("split", pa.string()), ("subject_id", pa.string()),
    ("class", pa.string()), ("source", pa.string()), ("caption", pa.string()),
    ("labels", pa.string()),  # the full JSON record (factor labels), as written in the tar
    ("members", pa.list_(pa.struct([("name", pa.string()), ("bytes", pa.int64()), ("sha256", pa.string())]))),
    ("bytes", pa.int64()),
])


def split_of(subject_id: str, split: SplitConfig, salt: int) -> str:
    """The split of a subject: a salted hash in [0, 1) against cumulative fractions."""
    u = unit_hash("split", salt, subject_id)
    if u < split.train:
        return "train"
    if u < split.train + split.val:
        return "val"
    return "test"


def iter_generated(gen_dir: str | Path, keep: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of the generate stage's chunks, in chunk order; only ``keep`` keys when given."""
    for chunk in sorted((Path(gen_dir) / "chunks").glob("chunk-*.tar")):
        for key, members in read_samples(chunk):
            if keep is None or key in keep:
                yield key, members


def tar_bytes(key: str, members: dict[str, bytes]) -> int:
    """Bytes a sample occupies in a tar: a 512-byte header per member plus data padded to 512."""
    return sum(512 + -(-len(v) // 512) * 512 for v in members.values())


class _SplitWriter:
    """Packs one split's samples into numbered tars bounded by sample count and bytes.

    The byte bound counts member headers and padding (``tar_bytes``), so a tar's size on
    disk is at most ``max_bytes`` plus the 10 KiB end-of-archive block; a single sample
    larger than the bound gets a tar of its own.
    """

    def __init__(self, out: Path, split: str, cfg: ShardConfig):
        self.out, self.split, self.cfg = out, split, cfg
        self.buffer: list[tuple[str, dict[str, bytes]]] = []
        self.buffer_bytes = 0
        self.shards: list[str] = []

    def add(self, key: str, members: dict[str, bytes]) -> str:
        size = tar_bytes(key, members)
        if self.buffer and (len(self.buffer) >= self.cfg.max_samples or self.buffer_bytes + size > self.cfg.max_bytes):
            self.flush()
        self.buffer.append((key, members))
        self.buffer_bytes += size
        return f"{self.split}-{len(self.shards):06d}.tar"

    def flush(self) -> None:
        if self.buffer:
            name = f"{self.split}-{len(self.shards):06d}.tar"
            write_samples(self.out / name, self.buffer)
            self.shards.append(name)
            self.buffer, self.buffer_bytes = [], 0


@dataclass
class ShardStats:
    samples: int
    by_split: dict[str, dict[str, int]]
    seconds: float
    out_dir: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        splits = ", ".join(f"{s} {v['samples']} groups/{v['subjects']} subjects/{v['shards']} tars"
                           for s, v in self.by_split.items())
        return f"shard: {self.samples} groups -> {self.out_dir} ({splits})"


def write_shards(samples: Iterable[tuple[str, dict[str, bytes]]], out_dir: str | Path, cfg: ShardConfig,
                 contact_sheet: bool = True) -> ShardStats:
    """Shard ``samples`` into ``out_dir`` (emptied first). See the module docstring for outputs."""
    t0 = time.perf_counter()
    out = reset_dir(out_dir)  # a link or mount point is emptied and written through
    writers = {s: _SplitWriter(out, s, cfg) for s in SPLITS}
    rows: list[dict[str, Any]] = []
    subject_split: dict[str, str] = {}
    for key, members in samples:
        rec = json.loads(members["json"])
        problems = label_problems(rec)
        if problems:
            raise InputError(f"group {key}: its json record does not fit spotdiff.common.record.LABELS (the schema the "
                             f"dataset cards declare): {'; '.join(problems[:10])}; give the label a type there")
        split = split_of(rec["subject_id"], cfg.split, cfg.split_seed)
        subject_split[rec["subject_id"]] = split
        shard = writers[split].add(key, members)
        rows.append({
            "shard": shard, "key": key, "split": split, "subject_id": rec["subject_id"], "class": rec["class"],
            "source": rec.get("source", ""), "caption": rec.get("caption", ""), "labels": members["json"].decode(),
            "members": [{"name": n, "bytes": len(v), "sha256": sha256_bytes(v)} for n, v in sorted(members.items())],
            "bytes": sum(len(v) for v in members.values()),
        })
    for w in writers.values():
        w.flush()
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), out / "index.parquet")
    tars = sorted(p.name for p in out.glob("*.tar"))
    (out / "SHA256SUMS").write_text("".join(f"{sha256_file(out / t)}  {t}\n" for t in tars))
    by_split = {}
    for s in SPLITS:
        srows = [r for r in rows if r["split"] == s]
        by_split[s] = {"samples": len(srows), "subjects": sum(1 for v in subject_split.values() if v == s),
                       "shards": len(writers[s].shards), "bytes": sum((out / t).stat().st_size for t in writers[s].shards)}
    (out / "sizes.json").write_text(json.dumps(by_split, indent=2, sort_keys=True) + "\n")
    names = ordered_members(m["name"] for r in rows for m in r["members"])
    (out / "README.md").write_text(card_text([s for s in SPLITS if writers[s].shards], names))
    if contact_sheet and rows:
        from spotdiff.common.contact_sheet import contact_sheet_for_shards

        contact_sheet_for_shards(out, cfg.contact_sheet_groups).save(out / "contact_sheet.png", optimize=False)
    return ShardStats(len(rows), by_split, round(time.perf_counter() - t0, 3), str(out))


def card_text(splits: list[str], members: list[str]) -> str:
    """The shard folder's ``README.md``: a Hugging Face card header with the ``configs`` of ``splits`` (those with
    tars) and the ``features`` of the WebDataset ``members``, and a few lines for a person."""
    header = {"configs": hf_configs(splits), "dataset_info": {"features": hf_features(members)}}
    names = ", ".join(f"`{HF_SPLITS[s]}` (`{s}-*.tar`)" for s in splits)
    return ("---\n" + yaml.safe_dump(header, sort_keys=False, default_flow_style=False, width=1000) + "---\n\n"
            "# SpotDiff subject-group shards\n\n"
            "WebDataset shards written by `spotdiff shard`: one sample per subject group (`anchor`, `bg`, `pose` views, "
            "a mask per view, `json` factor labels, `txt` caption); `index.parquet` lists every sample and its "
            f"members' sha256. Splits: {names}. `datasets.load_dataset(\"<this folder>\")` loads them with the "
            "features above: masks as 8-bit grey images, every label typed.\n")


def accepted_keys(gen_dir: str | Path) -> set[str]:
    """Keys of the groups the generate stage kept."""
    return set(pq.read_table(Path(gen_dir) / "records.parquet", columns=["key"]).column("key").to_pylist())


def shard(gen_dir: str | Path, out_dir: str | Path, cfg: ShardConfig, accepted: str | Path | None = None) -> ShardStats:
    """The stage: shard everything ``generate`` kept in ``gen_dir`` into ``out_dir``; with
    ``accepted`` (QA's accepted.txt, one key per line) only the keys it lists."""
    gen = Path(gen_dir)
    if not (gen / "stats.json").exists():
        raise MissingInputError(f"{gen}/stats.json missing: the generate stage did not finish (run `spotdiff generate`)")
    keep = accepted_keys(gen)
    if accepted is not None:
        if not Path(accepted).exists():
            raise MissingInputError(f"{accepted} missing: the qa stage did not finish (run `spotdiff qa`)")
        keep &= set(Path(accepted).read_text().split())
    expected = recorded_digests(gen)

    def checked() -> Iterator[tuple[str, dict[str, bytes]]]:
        # QA checked these bytes; a chunk tar damaged since then must not ship
        for key, members in iter_generated(gen, keep):
            why = digest_mismatch(expected.get(key), member_digests(members)) if expected else None
            if why:
                raise InputError(f"{gen}/chunks: group {key}: {why}; rebuild it (`spotdiff generate`, or "
                                 f"`dvc checkout {gen}` to restore the recorded one)")
            yield key, members

    stats = write_shards(checked(), out_dir, cfg)
    rejects = gen / "rejects.parquet"
    if rejects.exists():  # the generate stage's rejects travel with the shards they were left out of
        shutil.copyfile(rejects, Path(out_dir) / "rejects.parquet")
    return stats


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True) -> ShardStats:
    """The stage (``spotdiff.stages``): the groups of ``paths["generated"]`` that QA accepted
    (``paths["accepted"]``) -> ``paths["out"]``, with params ``shard``."""
    return shard(paths["generated"], paths["out"], params.shard, paths["accepted"])
