"""``publish`` stage: a reproducible SpotDiff10k release tarball (``verify`` checks one).

``publish`` writes ``<out>/spotdiff10k-<version>.tar`` and ``<out>/spotdiff10k-<version>.tar.sha256``
(``sha256sum -c`` format). Every member sits under one top folder ``spotdiff10k-<version>/``:

* ``shards/``: the shard stage's tars, ``index.parquet``, ``sizes.json``, its ``SHA256SUMS``, and
  ``rejects.parquet`` / ``contact_sheet.png`` / ``README.md`` (the shard folder's card) when present
  (each tar checked as ``verify_shards`` does, from the same read that packs it: ``_ShardPass``),
* ``model/``: ``model.safetensors``, ``config.json`` and ``ip_adapter.safetensors`` (when present),
  only when ``model_dir`` is given,
* ``README.md``: the dataset card (``spotdiff.publish.card``; it records the sha256 of the environment lock,
  ``requirements.lock``), ``metrics.json``: ``{"qa": ..., "evaluation": ...}`` (null when not given),
  ``params.yaml``: the params canonically (``params_bytes``),
* ``SHA256SUMS``: sha256 of every other file member, sorted by path.
* ``SHA256SUMS.sig``: only when signed (``sign_key``): an Ed25519 signature of ``SHA256SUMS``
  (``spotdiff.publish.sign``), which ``spotdiff verify --key`` checks. Unsigned releases are unchanged.

One release identity: the bytes depend only on the data, code and params, never on the entry point
(``dvc repro``, ``dvc exp run``, the Prefect ``pipeline`` deployment) or the formatting of params.yaml.
So ``params.yaml`` is packed as validated params re-dumped (defaults filled in, keys sorted, absolute
paths made relative: ``spotdiff.common.paths``), and no ``dvc.lock`` is packed: a lock is written only by
``dvc repro``, names the entry point's own paths (its stage commands, the output root) and hashes of the
last release, and adds nothing about the inputs that the release does not pin by content already -- every
data, model and metrics member by sha256 in ``SHA256SUMS``, the params in ``params.yaml``, the environment
by the lock's sha256 in the card, and the code by the bytes it made (and the library versions in every
group's record).

Byte-identical for the same inputs: members in sorted path order (parents first), directory
entries for every folder, mtime ``MTIME``, uid/gid 0, empty owner names, modes 0644 (files) and
0755 (folders), POSIX ustar format (so no pax headers, no times beyond mtime), plain tar (no
compression: the shards are JPEG/PNG already). Written to a temporary name in ``out`` and renamed, so a
shard that fails its check while the release is written leaves nothing. Each shard is read once, and the
release's own sha256 is taken from the bytes as they are written, not by reading the release again.

``spotdiff.publish.verify`` re-checks a release tar without extracting it and extracts it safely.

Versions (``check_version``): semantic ``MAJOR.MINOR.PATCH`` with an optional leading ``v``
(``1.0.0``, ``v2.1.3``; no leading zeros) or a date ``YYYY.MM.DD`` (zero-padded, a real date).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Mapping

import yaml

from spotdiff.common import determinism
from spotdiff.common.paths import portable_tree
from spotdiff.publish import card
from spotdiff.publish import sign as signing
from spotdiff.common.outputs import atomic_write, clean_stale_tmp
from spotdiff.common.shardset import ShardScan, index_problem, read_index, scan_shard
from spotdiff.common.tars import sha256_bytes, sha256_file
from spotdiff.errors import ConfigError, InputError, MissingInputError, ReleaseError

if TYPE_CHECKING:  # spotdiff.config (pydantic) is imported where params are loaded: `spotdiff verify` needs none
    from spotdiff.config import Params

PREFIX = "spotdiff10k-"
MTIME = 0
"""Modification time of every member (the epoch, as in ``spotdiff.common.tars``)."""
FILE_MODE = 0o644
DIR_MODE = 0o755
SHARD_RE = re.compile(r"^(train|val|test)-\d{6}\.tar$")
MODEL_FILES = ("model.safetensors", "config.json")
"""Required in ``model_dir``; ``OPTIONAL_MODEL_FILES`` are packaged too when present."""
OPTIONAL_MODEL_FILES = ("ip_adapter.safetensors", "backbone.safetensors")
"""The stage-2 adapter, and the fine-tuned backbone (``train.backbone_trainable``) without which the
heads of such a model would read features of the wrong backbone."""
SHARD_EXTRAS = ("rejects.parquet", "contact_sheet.png", "README.md")
"""Packed with the shards when present; ``README.md`` is the shard folder's own card (``shard.run.card_text``)."""
REQUIRED = ("README.md", "SHA256SUMS", "metrics.json", "params.yaml", "shards/index.parquet", "shards/sizes.json")
"""Files every release holds (relative to its top folder)."""
MAX_TEXT = 64 << 20
"""Largest metadata member (README, SHA256SUMS, JSON, YAML) ``verify`` reads into memory, bytes."""
MAX_LISTED = 20
"""Problems listed per shard before the rest are summarised as a count."""

_SEMVER = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_DATE = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def check_version(version: str) -> str:
    """``version`` unchanged if it is ``[v]MAJOR.MINOR.PATCH`` or a real date ``YYYY.MM.DD``; else ConfigError."""
    if not isinstance(version, str):
        raise ConfigError(f"release version must be a string, got {type(version).__name__}")
    m = _DATE.match(version)
    if m:
        try:
            dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as e:
            raise ConfigError(f"release version {version!r} looks like YYYY.MM.DD but is not a date: {e}") from None
        return version
    if _SEMVER.match(version):
        return version
    raise ConfigError(f"release version {version!r} must be MAJOR.MINOR.PATCH (optionally with a leading 'v', "
                     "no leading zeros, e.g. 1.0.0 or v1.2.3) or a date YYYY.MM.DD (e.g. 2025.10.07)")


def release_name(version: str) -> str:
    """Top folder (and tar stem) of a release: ``spotdiff10k-<version>``."""
    return PREFIX + check_version(version)


# ---------------------------------------------------------------------------------------------- publish


def publish(shards_dir: str | Path, out_dir: str | Path, *, version: str, params_path: str | Path = "params.yaml",
            env_lock: str | Path | None = None, qa_metrics: str | Path | None = None,
            model_dir: str | Path | None = None, eval_metrics: str | Path | None = None,
            backends: Mapping[str, str], folder_license: str | None = None,
            sign_key: str | Path | None = None) -> Path:
    """Write the release tar of ``shards_dir`` into ``out_dir``; returns its path. See the module docstring.

    ``backends`` maps each model-backed step to what ran it (e.g. ``{"segment": "grabcut", "embed":
    "embedded"}``; ``backends_from_params`` derives it from params). ``env_lock``: the environment lock
    file (``requirements.lock``) whose sha256 the card records (None: the card says none was given);
    ``qa_metrics``, ``eval_metrics`` (JSON files) and ``model_dir`` are optional. ``folder_license``
    states the licence of a folder source's photos for the card. An existing tar of the same name is
    replaced. Paths in params are recorded relative to the working directory (``canonical_params``).
    ``sign_key`` (an Ed25519 private key file) adds ``SHA256SUMS.sig``.
    """
    top = release_name(version)
    private_key = signing.load_private_key(sign_key) if sign_key is not None else None  # a bad key fails first
    backends = _check_backends(backends)
    shards = Path(shards_dir)
    try:  # the tars themselves are checked as they are packed (_ShardPass), read once
        verified = _listed_sums(shards)
        index_rows = read_index(shards)
    except (OSError, ValueError) as e:
        raise ReleaseError(str(shards), [f"shards do not verify (run `spotdiff shard` again): {e}"]) from None
    listed = list(verified)
    on_disk = sorted(p.name for p in shards.glob("*.tar"))
    problems = [f"{shards / n}: not a shard name ({SHARD_RE.pattern})" for n in on_disk if not SHARD_RE.match(n)]
    if sorted(listed) != on_disk:
        problems.append(f"{shards}/SHA256SUMS lists {sorted(listed)} but the folder holds {on_disk}")
    if problems:
        raise ReleaseError(str(shards), problems)

    entries: dict[str, Path | bytes] = {f"shards/{n}": shards / n for n in on_disk}
    for name in ("index.parquet", "sizes.json", "SHA256SUMS", *SHARD_EXTRAS):
        if (shards / name).is_file():
            entries[f"shards/{name}"] = shards / name
    tree = canonical_params(_need_file(params_path, "params file"))
    entries["params.yaml"] = params_bytes(tree)
    # the CPU feature level the numeric code was pinned to decides bytes as much as the lock does
    environment: dict[str, Any] = {"lock": None, "sha256": None, "cpu_level": determinism.level()}
    if env_lock is not None:
        lock = _need_file(env_lock, "environment lock")
        environment.update(lock=lock.name, sha256=sha256_file(lock))
    qa = _load_json(qa_metrics, "QA metrics") if qa_metrics is not None else None
    ev = _load_json(eval_metrics, "evaluation metrics") if eval_metrics is not None else None
    entries["metrics.json"] = _json_bytes({"qa": qa, "evaluation": ev})
    model = None
    if model_dir is not None:
        model = {}
        mdir = Path(model_dir)
        for name in MODEL_FILES + OPTIONAL_MODEL_FILES:
            path = mdir / name
            if not path.is_file():
                if name in OPTIONAL_MODEL_FILES:
                    continue
                raise MissingInputError(f"{path} missing: model_dir must hold {', '.join(MODEL_FILES)} "
                                        "(run `spotdiff train`)")
            if name.endswith(".safetensors"):
                with open(path, "rb") as f:
                    model[name] = safetensors_summary(f, path.stat().st_size, str(path))
            else:
                _load_json(path, "model config")
                model[name] = {}
            entries[f"model/{name}"] = path

    sizes = json.loads((shards / "sizes.json").read_text())
    files = sorted([*entries, "README.md", "SHA256SUMS", *([signing.SIG_NAME] if private_key else [])])
    entries["README.md"] = card.render(
        version=version, index_rows=index_rows, sizes=sizes, generate=tree["generate"], backends=backends, qa=qa,
        evaluation=ev, model=model, files=files, folder_license=folder_license, environment=environment).encode()

    def digest(name: str, src: Path | bytes) -> str:
        if isinstance(src, bytes):
            return sha256_bytes(src)
        shard = name.removeprefix("shards/")
        return verified[shard] if name.endswith(".tar") and shard in verified else sha256_file(src)

    digests = {name: digest(name, src) for name, src in entries.items()}
    entries["SHA256SUMS"] = "".join(f"{digests[n]}  {n}\n" for n in sorted(digests)).encode()
    if private_key is not None:
        entries[signing.SIG_NAME] = signing.sign(entries["SHA256SUMS"], private_key)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out)  # what a killed publish left
    tar_path = out / f"{top}.tar"
    shard_pass = _ShardPass(shards, verified, index_rows)
    release_digest = _write_tar(tar_path, top, entries, digests, shard_pass)
    _atomic_write(out / f"{top}.tar.sha256", f"{release_digest}  {tar_path.name}\n".encode())
    return tar_path


HOW_NOT_WHAT = ("orchestrate",)
"""Params sections left out of the release: they say how a build ran (task runner, worker count, a Dask
scheduler's address), never what it built (outputs are byte-identical on every runner), so the same data
gets one release whether threads, a process pool or a Dask cluster built it."""


def canonical_params(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """The params file as the release records it: validated (so an invalid file fails here, and omitted
    keys appear with their defaults), as plain data, less ``HOW_NOT_WHAT``, every absolute path made
    relative to ``root`` (default: the working directory, the repository; ``spotdiff.common.paths.portable``),
    keys sorted at every level, so the file's key order and style change nothing."""
    from spotdiff.config import load_params

    tree = load_params(path).model_dump(mode="json")
    return _sorted(portable_tree({k: v for k, v in tree.items() if k not in HOW_NOT_WHAT}, root))


def _sorted(tree: Any) -> Any:
    """Every mapping's keys sorted, recursively: a user-keyed map (``generate.sources``) keeps the order its
    file wrote it in, and the card dumps ``generate`` as it gets it."""
    if isinstance(tree, Mapping):
        return {k: _sorted(tree[k]) for k in sorted(tree)}
    if isinstance(tree, list):
        return [_sorted(v) for v in tree]
    return tree


PARAMS_HEADER = ("# The params that built this release: params.yaml validated (defaults filled in), keys sorted,\n"
                 "# paths relative to the repository. Load it with spotdiff.config.load_params.\n")


def params_bytes(tree: Mapping[str, Any]) -> bytes:
    """``params.yaml`` as packed: ``tree`` dumped with sorted keys in YAML's block style, so the same params
    give the same bytes however the file was written (``dvc exp run -S`` rewrites its formatting, the
    ``pipeline`` deployment writes its own copy with overrides)."""
    return (PARAMS_HEADER + yaml.safe_dump(dict(tree), sort_keys=True, default_flow_style=False)).encode()


def backends_from_params(params: Mapping[str, Any]) -> dict[str, str]:
    """What produced a release, from a params mapping (``canonical_params``, or a raw params.yaml): ``embedded`` for the offline defaults,
    else the real weights' path or hub id. Keys: sources, backgrounds, segment, landmarks, diffusion,
    embed, qa_identity, stage2."""
    g = params.get("generate") or {}
    d = g.get("diffusion") or {}
    embed = params.get("embed") or {}
    stage2 = (params.get("train") or {}).get("stage2") or {}
    seg = str(g.get("segment", "auto"))
    if seg == "sam":
        seg = f"sam (weights: {(g.get('sam') or {}).get('checkpoint')})"
    pose = g.get("pose") or {}
    return {
        "sources": ", ".join(sorted(k for k, w in (g.get("sources") or {}).items() if w)),
        "backgrounds": ", ".join(sorted(k for k, w in (g.get("backgrounds") or {}).items() if w)),
        "segment": seg,
        "landmarks": ("off" if not pose.get("landmarks", True)
                      else f"mediapipe (weights: {pose['landmarks_model']})" if pose.get("landmarks_model")
                      else "embedded (mediapipe bundled pose model)"),
        "diffusion": f"stable diffusion (weights: {d['model']})" if d.get("model") else "none",
        "embed": ("embedded (seeded CLIP-architecture encoder)" if embed.get("backend", "embedded") == "embedded"
                  else f"{embed.get('backend')} (weights: {embed.get('model')})"),
        "qa_identity": str(((params.get("qa") or {}).get("identity") or {}).get("encoder", "descriptor")),
        "stage2": f"stable diffusion (weights: {stage2['model']})" if stage2.get("model") else "off",
    }


def _check_backends(backends: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(backends, Mapping) or not backends:
        raise ValueError("backends must be a non-empty mapping step -> backend, e.g. "
                         "{'segment': 'grabcut', 'embed': 'embedded'} (see release.backends_from_params)")
    bad = [f"{k!r}: {v!r}" for k, v in backends.items() if not (isinstance(k, str) and k and isinstance(v, str) and v)]
    if bad:
        raise ValueError(f"backends: keys and values must be non-empty strings; bad entries: {', '.join(bad)}")
    return dict(sorted(backends.items()))


def _need_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"{what} {p} not found")
    return p


def _load_json(path: str | Path, what: str) -> dict[str, Any]:
    p = _need_file(path, what)
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {p}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {p}: expected a JSON object, got {type(data).__name__}")
    return data


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _tarinfo(name: str, size: int, is_dir: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = DIR_MODE if is_dir else FILE_MODE
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    """Reads a file for tarfile while hashing it, so a file changed since it was hashed is caught."""

    def __init__(self, f: IO[bytes]):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        return b


def _path_key(name: str) -> list[str]:
    return name.split("/")


def _listed_sums(shards: Path) -> dict[str, str]:
    """Shard tar name -> sha256 as the shard folder's ``SHA256SUMS`` lists them."""
    listed = {}
    for line in (shards / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name] = digest
    return listed


class _ShardPass:
    """The checks of ``verify_shards``, made on the bytes the release writer packs: each shard tar read
    once, its sha256 against ``SHA256SUMS``, its members against ``index.parquet``, and at the end every
    indexed sample seen. A failure raises ``ReleaseError`` while the release is still a temporary file."""

    def __init__(self, shards: Path, listed: Mapping[str, str], index_rows: list[dict[str, Any]]):
        self.shards, self.listed = shards, listed
        self.index = {r["key"]: r for r in index_rows}
        self.seen = 0

    def _fail(self, problem: str) -> ReleaseError:
        return ReleaseError(str(self.shards), [f"shards do not verify (run `spotdiff shard` again): {problem}"])

    def read(self, path: Path) -> bytes | None:
        """The checked bytes of shard ``path``; None when it is too large to hold (checked all the same:
        the writer then reads it again, hashing, against the digest checked here)."""
        try:
            scan: ShardScan = scan_shard(path, keep=True)
        except (OSError, tarfile.TarError, EOFError) as e:
            raise self._fail(f"{path}: does not read as a tar: {e}") from None
        if scan.sha256 != self.listed.get(path.name):
            raise self._fail(f"{path}: sha256 differs from SHA256SUMS")
        problem = f"{path.name}: {scan.problems[0]}" if scan.problems else index_problem(scan, path.name, self.index)
        if problem:
            raise self._fail(problem)
        self.seen += len(scan.samples)
        return scan.data

    def finish(self) -> None:
        if self.seen != len(self.index):
            raise self._fail(f"index.parquet lists {len(self.index)} samples, tars hold {self.seen}")


class _HashingWriter:
    """The release file for tarfile, hashing every byte written."""

    def __init__(self, f: IO[bytes]):
        self.f, self.h = f, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return self.f.write(b)

    def tell(self) -> int:
        return self.f.tell()


def _write_tar(path: Path, top: str, entries: Mapping[str, Path | bytes], digests: Mapping[str, str],
               shard_pass: _ShardPass) -> str:
    """Write the release tar; returns its sha256."""
    dirs = {top} | {f"{top}/{'/'.join(a.split('/')[:i])}" for a in entries for i in range(1, a.count("/") + 1)}
    names = sorted(dirs | {f"{top}/{a}" for a in entries}, key=_path_key)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as raw:
            out = _HashingWriter(raw)
            with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for name in names:
                    if name in dirs:
                        tar.addfile(_tarinfo(name, 0, True))
                        continue
                    arc = name[len(top) + 1:]
                    src = entries[arc]
                    if isinstance(src, Path) and arc.startswith("shards/") and arc.endswith(".tar"):
                        data = shard_pass.read(src)
                        if data is not None:
                            src = data
                    if isinstance(src, bytes):
                        tar.addfile(_tarinfo(name, len(src), False), io.BytesIO(src))
                        continue
                    with open(src, "rb") as f:
                        reader = _HashingReader(f)
                        tar.addfile(_tarinfo(name, os.fstat(f.fileno()).st_size, False), reader)
                    if arc in digests and reader.h.hexdigest() != digests[arc]:
                        raise ReleaseError(str(src), ["changed while the release was being written; publish again"])
                shard_pass.finish()
    return out.h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


# ------------------------------------------------------------------------------------------- safetensors

_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def safetensors_summary(f: IO[bytes], size: int, where: str) -> dict[str, Any]:
    """Check a safetensors file's header against its size without loading tensors; returns
    ``{"tensors", "parameters", "dtypes"}``. Raises InputError naming ``where`` on a malformed file."""
    head = f.read(8)
    if len(head) < 8:
        raise InputError(f"{where}: too short for a safetensors file ({size} bytes)")
    n = int.from_bytes(head, "little")
    if n > min(size - 8, 100 << 20):
        raise InputError(f"{where}: safetensors header length {n} exceeds the file ({size} bytes)")
    try:
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise InputError(f"{where}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    params, end, dtypes = 0, 0, set()
    for key, t in header.items():
        try:
            shape, (a, b), dtype = [int(x) for x in t["shape"]], t["data_offsets"], str(t["dtype"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: tensor {key!r} has a malformed header entry {t!r}") from None
        count = 1
        for s in shape:
            count *= s
        if not 0 <= a <= b or (dtype in _DTYPE_BYTES and b - a != count * _DTYPE_BYTES[dtype]):
            raise InputError(f"{where}: tensor {key!r}: data_offsets {[a, b]} do not fit {dtype} {shape}")
        params, end = params + count, max(end, b)
        dtypes.add(dtype)
    if 8 + n + end != size:
        raise InputError(f"{where}: tensors end at byte {8 + n + end} but the file has {size} bytes")
    return {"tensors": len(header), "parameters": params, "dtypes": sorted(dtypes)}


@dataclass
class PublishStats:
    release: str
    """Path of the release tar."""
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return f"publish: {self.release} sha256 {self.sha256}"


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True, version: str | None = None,
        sign: str | None = None) -> PublishStats:
    """The stage (``spotdiff.stages``): release ``paths["shards"]`` into ``paths["out"]`` with the QA and
    evaluation metrics (``metrics.json`` in ``paths["qa"]`` and ``paths["eval"]``) and the model in
    ``paths["model"]`` where they exist, ``paths["params_file"]`` canonically, and the sha256 of
    ``paths["requirements"]`` (the environment lock; an error when it is missing) in the card. ``sign``: an
    Ed25519 private key file that signs the release's ``SHA256SUMS`` (``SHA256SUMS.sig``)."""
    def existing(path: Path | None) -> Path | None:
        return path if path is not None and Path(path).exists() else None

    tree = canonical_params(paths["params_file"])
    tar = publish(paths["shards"], paths["out"], version=version or params.publish.version,
                  params_path=paths["params_file"], env_lock=paths["requirements"],
                  qa_metrics=existing(Path(paths["qa"]) / "metrics.json"), model_dir=existing(paths.get("model")),
                  eval_metrics=existing(Path(paths["eval"]) / "metrics.json"), backends=backends_from_params(tree),
                  folder_license=params.publish.folder_license, sign_key=sign)
    return PublishStats(str(tar), Path(f"{tar}.sha256").read_text().split()[0])
