"""Are two builds equivalent? ``spotdiff compare A B`` for releases or data folders that cannot match bytes.

A rebuild on another machine kind (another architecture, another CPU feature level) may not reproduce the
release bytes; it should still hold the same data up to rounding. ``compare(a, b, tolerances)`` checks
that, on two **builds**, each one of:

* a release tar (``spotdiff10k-<version>.tar``) or its extracted top folder,
* a pipeline data root (``data/``: ``shards/``, and ``qa/metrics.json``, ``eval/metrics.json`` when there),
* a shard folder (``index.parquet`` beside the split tars).

What it compares:

* **groups**: the sample keys of both indexes (``index.parquet``); keys only in one are differences;
* **splits**: a common group in another split is a difference;
* **labels**: each group's JSON record, leaf by leaf; numbers may differ by ``max_label_diff``, anything
  else must be equal;
* **members**: every member of every common group, read from the shard tars; equal bytes are identical;
  images and masks (``.jpg``, ``.png``) are decoded and compared per pixel: the largest absolute
  difference (0-255) and the mean absolute difference over all pixels and channels, within
  ``max_pixel_diff`` and ``max_mean_pixel_diff``; other members (captions) must be equal; ``json`` is
  the labels, compared above;
* **metrics**: every number in ``metrics.json`` (QA and evaluation), within ``max_metric_diff``
  (absolute); other values must be equal; a metric in only one build is a difference;
* **params**: ``params.yaml`` of both releases (when both have one) must be equal: a rebuild is the same
  recipe.

The builds are **equivalent** when nothing differs beyond the tolerances. Nothing is extracted: tars are
read in place, member by member. (numpy, pyarrow and Pillow are imported when a comparison runs: the
``spotdiff`` command imports this module for its defaults.)
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LISTED = 10
"""Differences listed per kind in the report before the rest are counted."""


@dataclass(frozen=True)
class Tolerances:
    """What still counts as equivalent."""

    max_pixel_diff: float = 8.0
    """Largest absolute difference of any pixel channel of any image or mask, on 0-255."""
    max_mean_pixel_diff: float = 0.5
    """Largest mean absolute difference over one image or mask (all pixels and channels), on 0-255."""
    max_label_diff: float = 1e-3
    """Largest absolute difference of a number in a group's labels."""
    max_metric_diff: float = 0.01
    """Largest absolute difference of a number in metrics.json."""

    def describe(self) -> str:
        return (f"pixels max |diff| <= {self.max_pixel_diff:g} and mean |diff| <= {self.max_mean_pixel_diff:g} "
                f"(0-255), labels <= {self.max_label_diff:g}, metrics <= {self.max_metric_diff:g}")


# ---------------------------------------------------------------------------------------------- builds


@dataclass
class Build:
    """One side of a comparison: its index rows, members' locations, metrics and params."""

    name: str
    kind: str
    """``release``, ``release folder``, ``data folder`` or ``shard folder``."""
    index: dict[str, dict[str, Any]]
    """key -> {"split", "labels"}."""
    members: dict[str, dict[str, tuple[Path, int, int]]]
    """key -> member name -> (file, offset, size) of its bytes."""
    metrics: dict[str, Any] | None
    params: dict[str, Any] | None

    def read(self, key: str, member: str) -> bytes:
        path, offset, size = self.members[key][member]
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)


def _split_name(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    key, _, member = base.partition(".")
    return key, member


def _shard_members(tar: tarfile.TarFile, file: Path, base: int, into: dict[str, dict[str, tuple[Path, int, int]]]) -> None:
    for m in tar.getmembers():
        if m.isfile():
            key, member = _split_name(m.name)
            into.setdefault(key, {})[member] = (file, base + m.offset_data, m.size)


def _index(table_bytes: bytes | Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    src = io.BytesIO(table_bytes) if isinstance(table_bytes, bytes) else table_bytes
    rows = pq.read_table(src, columns=["key", "split", "labels"]).to_pylist()
    return {r["key"]: {"split": r["split"], "labels": json.loads(r["labels"])} for r in rows}


def _release_tar(path: Path) -> Build:
    members: dict[str, dict[str, tuple[Path, int, int]]] = {}
    files: dict[str, bytes] = {}
    with tarfile.open(path, "r:") as outer:
        for m in outer.getmembers():
            if not m.isfile():
                continue
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            if rel.startswith("shards/") and rel.endswith(".tar"):
                f = outer.extractfile(m)
                assert f is not None
                with tarfile.open(fileobj=f, mode="r:") as inner:
                    _shard_members(inner, path, m.offset_data, members)
            elif rel in ("shards/index.parquet", "metrics.json", "params.yaml"):
                f = outer.extractfile(m)
                assert f is not None
                files[rel] = f.read()
    if "shards/index.parquet" not in files:
        raise ValueError(f"{path}: not a release (no shards/index.parquet)")
    metrics = json.loads(files["metrics.json"]) if "metrics.json" in files else None
    params = yaml.safe_load(files["params.yaml"]) if "params.yaml" in files else None
    return Build(str(path), "release", _index(files["shards/index.parquet"]), members, metrics, params)


def _folder(path: Path) -> Build:
    root = path
    if not (root / "index.parquet").is_file() and not (root / "shards/index.parquet").is_file():
        inner = [p for p in root.iterdir() if p.is_dir() and (p / "shards/index.parquet").is_file()]
        if len(inner) == 1:  # the folder a release was extracted into
            root = inner[0]
    if (root / "index.parquet").is_file():
        shards, kind = root, "shard folder"
    elif (root / "shards/index.parquet").is_file():
        shards, kind = root / "shards", "release folder" if (root / "SHA256SUMS").is_file() else "data folder"
    else:
        raise ValueError(f"{path}: no index.parquet there or in shards/ (expected a release, its extracted folder, "
                         "a data folder or a shard folder)")
    members: dict[str, dict[str, tuple[Path, int, int]]] = {}
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path, "r:") as tar:
            _shard_members(tar, tar_path, 0, members)
    metrics = None
    if (root / "metrics.json").is_file():
        metrics = json.loads((root / "metrics.json").read_text())
    elif kind == "data folder":
        found = {k: json.loads((root / d / "metrics.json").read_text())
                 for k, d in (("qa", "qa"), ("evaluation", "eval")) if (root / d / "metrics.json").is_file()}
        metrics = found or None
    params = yaml.safe_load((root / "params.yaml").read_text()) if (root / "params.yaml").is_file() else None
    return Build(str(path), kind, _index(shards / "index.parquet"), members, metrics, params)


def open_build(path: str | Path) -> Build:
    """A release tar, an extracted release, a data folder or a shard folder, read in place."""
    p = Path(path)
    if p.is_file():
        if not tarfile.is_tarfile(p):
            raise ValueError(f"{p}: not a tar file (expected a release tar or a folder)")
        return _release_tar(p)
    if p.is_dir():
        return _folder(p)
    raise FileNotFoundError(f"{p} not found")


# ---------------------------------------------------------------------------------------------- compare


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for k in sorted(tree, key=str):
            yield from _leaves(tree[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class ValueDiff:
    path: str
    a: Any
    b: Any

    @property
    def delta(self) -> float | None:
        """b - a for two numbers a finite distance apart, else None."""
        if not (_number(self.a) and _number(self.b)):
            return None
        d = float(self.b) - float(self.a)
        return d if math.isfinite(d) else None


def diff_values(a: Any, b: Any, tol: float) -> tuple[list[ValueDiff], float]:
    """Leaves of ``a`` and ``b`` that differ (numbers: by more than ``tol``), and the largest absolute
    difference of numbers present in both."""
    la, lb = dict(_leaves(a)), dict(_leaves(b))
    out, largest = [], 0.0
    for path in sorted(set(la) | set(lb)):
        if path not in la or path not in lb:
            out.append(ValueDiff(path, la.get(path, "(absent)"), lb.get(path, "(absent)")))
            continue
        x, y = la[path], lb[path]
        if x == y:
            continue
        if _number(x) and _number(y):
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(float(x) - float(y))
            if not math.isfinite(d):  # nan against a number, or an infinity against anything else
                out.append(ValueDiff(path, x, y))
                continue
            largest = max(largest, d)
            if d > tol:
                out.append(ValueDiff(path, x, y))
        elif x != y:
            out.append(ValueDiff(path, x, y))
    return out, largest


@dataclass
class MemberDiff:
    key: str
    member: str
    problem: str
    """``pixels`` (decoded, over a tolerance), ``shape``, ``undecodable``, ``bytes`` (not an image) or ``missing``."""
    max_diff: float | None = None
    mean_diff: float | None = None
    detail: str = ""

    def line(self) -> str:
        where = f"{self.key}.{self.member}"
        if self.problem == "pixels":
            return f"{where}: pixels max |diff| {self.max_diff:g}, mean |diff| {self.mean_diff:.4g}"
        return f"{where}: {self.problem}{': ' + self.detail if self.detail else ''}"


def _decode(data: bytes) -> np.ndarray:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im, dtype=np.int16)


def pixel_diff(a: bytes, b: bytes) -> tuple[float, float] | str:
    """(max, mean) absolute difference of two encoded images, or why they cannot be compared."""
    try:
        x, y = _decode(a), _decode(b)
    except Exception as e:  # noqa: BLE001 -- any decoder error is a difference to report, not a crash
        return f"undecodable ({type(e).__name__}: {e})"
    if x.shape != y.shape:
        return f"shape {x.shape} vs {y.shape}"
    d = abs(x - y)
    return float(d.max()) if d.size else 0.0, float(d.mean()) if d.size else 0.0


@dataclass
class Comparison:
    a: str
    b: str
    tolerances: Tolerances
    groups: dict[str, int] = field(default_factory=dict)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    split_diffs: list[tuple[str, str, str]] = field(default_factory=list)
    label_diffs: dict[str, list[ValueDiff]] = field(default_factory=dict)
    label_max_diff: float = 0.0
    members_compared: int = 0
    members_identical: int = 0
    pixel_max: tuple[float, str] = (0.0, "")
    """Largest pixel difference over every decoded member, and where."""
    pixel_mean: tuple[float, str] = (0.0, "")
    member_diffs: list[MemberDiff] = field(default_factory=list)
    """Members over a tolerance, or not comparable."""
    metric_diffs: list[ValueDiff] = field(default_factory=list)
    metric_deltas: list[ValueDiff] = field(default_factory=list)
    """Every numeric metric that changed at all, within tolerance or not."""
    metrics_compared: int = 0
    metrics_note: str = ""
    param_diffs: list[ValueDiff] = field(default_factory=list)
    params_note: str = ""

    @property
    def problems(self) -> list[str]:
        """Why the builds are not equivalent (empty when they are)."""
        p = []
        if self.only_in_a or self.only_in_b:
            p.append(f"groups differ: {len(self.only_in_a)} only in A, {len(self.only_in_b)} only in B")
        if self.split_diffs:
            p.append(f"{len(self.split_diffs)} group(s) in another split")
        if self.label_diffs:
            p.append(f"labels of {len(self.label_diffs)} group(s) differ")
        if self.member_diffs:
            p.append(f"{len(self.member_diffs)} member(s) differ beyond tolerance")
        if self.metric_diffs:
            p.append(f"{len(self.metric_diffs)} metric(s) differ beyond tolerance")
        if self.param_diffs:
            p.append(f"params differ at {len(self.param_diffs)} key(s)")
        return p

    @property
    def equivalent(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        def vd(d: ValueDiff) -> dict[str, Any]:
            return {"path": d.path, "a": d.a, "b": d.b, "delta": d.delta}

        return {
            "a": self.a, "b": self.b, "equivalent": self.equivalent, "problems": self.problems,
            "tolerances": self.tolerances.__dict__, "groups": self.groups,
            "only_in_a": self.only_in_a, "only_in_b": self.only_in_b,
            "split_diffs": [{"key": k, "a": x, "b": y} for k, x, y in self.split_diffs],
            "label_diffs": {k: [vd(d) for d in v] for k, v in self.label_diffs.items()},
            "label_max_diff": self.label_max_diff,
            "members": {"compared": self.members_compared, "identical": self.members_identical,
                        "pixel_max_diff": {"value": self.pixel_max[0], "member": self.pixel_max[1]},
                        "pixel_mean_diff": {"value": self.pixel_mean[0], "member": self.pixel_mean[1]}},
            "member_diffs": [d.__dict__ for d in self.member_diffs],
            "metrics_compared": self.metrics_compared, "metric_deltas": [vd(d) for d in self.metric_deltas],
            "metric_diffs": [vd(d) for d in self.metric_diffs], "metrics_note": self.metrics_note,
            "param_diffs": [vd(d) for d in self.param_diffs], "params_note": self.params_note,
        }

    def report(self) -> str:
        """The comparison for a person: one section per aspect, then the verdict."""
        def listed(items: list[str]) -> list[str]:
            more = len(items) - LISTED
            return [f"    {x}" for x in items[:LISTED]] + ([f"    ... and {more} more"] if more > 0 else [])

        g = self.groups
        L = [f"A: {self.a}", f"B: {self.b}", f"tolerances: {self.tolerances.describe()}", "",
             f"groups: {g['a']} in A, {g['b']} in B, {g['common']} in both"]
        if self.only_in_a:
            L += ["  only in A:"] + listed(self.only_in_a)
        if self.only_in_b:
            L += ["  only in B:"] + listed(self.only_in_b)
        L.append(f"splits: {'same for every common group' if not self.split_diffs else f'{len(self.split_diffs)} differ'}")
        L += listed([f"{k}: {x} -> {y}" for k, x, y in self.split_diffs])
        L.append(f"labels: {'same' if not self.label_diffs else f'{len(self.label_diffs)} group(s) differ'}"
                 f" (largest numeric difference {self.label_max_diff:.3g})")
        L += listed([f"{k}: " + ", ".join(f"{d.path} {d.a!r} -> {d.b!r}" for d in v[:4]) + (" ..." if len(v) > 4 else "")
                     for k, v in self.label_diffs.items()])
        L.append(f"members: {self.members_compared} compared, {self.members_identical} identical bytes; "
                 f"pixels: largest max |diff| {self.pixel_max[0]:g}" + (f" ({self.pixel_max[1]})" if self.pixel_max[1] else "")
                 + f", largest mean |diff| {self.pixel_mean[0]:.4g}" + (f" ({self.pixel_mean[1]})" if self.pixel_mean[1] else ""))
        if self.member_diffs:
            L += [f"  {len(self.member_diffs)} beyond tolerance:"] + listed([d.line() for d in self.member_diffs])
        if self.metrics_note:
            L.append(f"metrics: {self.metrics_note}")
        else:
            L.append(f"metrics: {self.metrics_compared} compared, {len(self.metric_deltas)} changed, "
                     f"{len(self.metric_diffs)} beyond tolerance")
            shown = sorted(self.metric_deltas, key=lambda d: -abs(d.delta or 0))
            L += listed([f"{d.path}: {d.a:.6g} -> {d.b:.6g} ({d.delta:+.4g})" for d in shown])
            L += listed([f"{d.path}: {d.a!r} -> {d.b!r}" for d in self.metric_diffs if d.delta is None])
        if self.params_note:
            L.append(f"params: {self.params_note}")
        else:
            L.append(f"params: {'same' if not self.param_diffs else f'{len(self.param_diffs)} key(s) differ'}")
            L += listed([f"{d.path}: {d.a!r} -> {d.b!r}" for d in self.param_diffs])
        L += ["", "EQUIVALENT within the tolerances" if self.equivalent else
              "NOT EQUIVALENT: " + "; ".join(self.problems)]
        return "\n".join(L) + "\n"


def compare(a: str | Path | Build, b: str | Path | Build, tolerances: Tolerances = Tolerances()) -> Comparison:
    """Compare two builds (see the module docstring)."""
    ba = a if isinstance(a, Build) else open_build(a)
    bb = b if isinstance(b, Build) else open_build(b)
    tol = tolerances
    c = Comparison(f"{ba.name} ({ba.kind})", f"{bb.name} ({bb.kind})", tol)
    keys_a, keys_b = set(ba.index), set(bb.index)
    common = sorted(keys_a & keys_b)
    c.groups = {"a": len(keys_a), "b": len(keys_b), "common": len(common)}
    c.only_in_a, c.only_in_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)

    for key in common:
        ra, rb = ba.index[key], bb.index[key]
        if ra["split"] != rb["split"]:
            c.split_diffs.append((key, ra["split"], rb["split"]))
        diffs, largest = diff_values(ra["labels"], rb["labels"], tol.max_label_diff)
        c.label_max_diff = max(c.label_max_diff, largest)
        if diffs:
            c.label_diffs[key] = diffs

    for key in common:
        ma, mb = ba.members.get(key, {}), bb.members.get(key, {})
        for member in sorted(set(ma) | set(mb)):
            if member not in ma or member not in mb:
                c.member_diffs.append(MemberDiff(key, member, "missing", detail=f"only in {'A' if member in ma else 'B'}"))
                continue
            c.members_compared += 1
            xa, xb = ba.read(key, member), bb.read(key, member)
            if xa == xb:
                c.members_identical += 1
                continue
            if member == "json":
                continue  # the labels, compared leaf by leaf above
            if not member.endswith(IMAGE_SUFFIXES):
                c.member_diffs.append(MemberDiff(key, member, "bytes", detail=f"{len(xa)} vs {len(xb)} bytes"))
                continue
            got = pixel_diff(xa, xb)
            if isinstance(got, str):
                c.member_diffs.append(MemberDiff(key, member, got.split(" ", 1)[0], detail=got))
                continue
            mx, mean = got
            where = f"{key}.{member}"
            if mx > c.pixel_max[0]:
                c.pixel_max = (mx, where)
            if mean > c.pixel_mean[0]:
                c.pixel_mean = (mean, where)
            if mx > tol.max_pixel_diff or mean > tol.max_mean_pixel_diff:
                c.member_diffs.append(MemberDiff(key, member, "pixels", mx, mean))

    if ba.metrics is None or bb.metrics is None:
        c.metrics_note = "not compared: " + " and ".join(f"{n} has none" for n, m in (("A", ba.metrics), ("B", bb.metrics))
                                                        if m is None)
    else:
        la, lb = dict(_leaves(ba.metrics)), dict(_leaves(bb.metrics))
        c.metrics_compared = len(set(la) & set(lb))
        c.metric_diffs, _ = diff_values(ba.metrics, bb.metrics, tol.max_metric_diff)
        c.metric_deltas = [d for d in (ValueDiff(p, la[p], lb[p]) for p in sorted(set(la) & set(lb)))
                           if d.delta is not None and d.delta != 0]
    if ba.params is None or bb.params is None:
        c.params_note = "not compared: " + " and ".join(f"{n} has none" for n, p in (("A", ba.params), ("B", bb.params))
                                                       if p is None)
    else:
        c.param_diffs, _ = diff_values(ba.params, bb.params, 0.0)
    return c
