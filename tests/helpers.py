"""Plain helpers shared by several test modules (``from helpers import ...``); the shared fixtures are in
conftest.py. Nothing here imports torch, diffusers or transformers at module level: modules that need them
skip themselves with ``pytest.importorskip`` first."""

from __future__ import annotations

import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml
from PIL import Image

from spotdiff.common.record import SubjectGroup, View
from spotdiff.config import load_params

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- bad inputs


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb as a reader first sees it)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_zlib_bomb(tag: bytes = b"iCCP", inflated: int = 64 << 20) -> bytes:
    """A valid 64 x 64 RGB PNG carrying an ``iCCP`` (ICC profile) or ``zTXt`` chunk of ``inflated`` zero bytes
    deflated to ~1/1000 of that: a decompression bomb that hides in metadata, not in the pixel count."""
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80" * 64 * 3 for _ in range(64))
    payload = (b"icc\x00\x00" if tag == b"iCCP" else b"k\x00\x00") + zlib.compress(b"\x00" * inflated, 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(tag, payload)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def make_bad_folder(root: Path, dreambench: Path) -> dict[str, str | None]:
    """A folder source with every kind of awkward file. Returns file name -> expected reject reason
    (None: must be processed correctly)."""
    subj = root / "teapot"
    subj.mkdir(parents=True)
    good = dreambench / "teapot" / "00.jpg"
    photo = Image.open(good).convert("RGB")
    expected: dict[str, str | None] = {}

    shutil.copy(good, subj / "good.jpg"); expected["good.jpg"] = None
    (subj / "empty.jpg").write_bytes(b""); expected["empty.jpg"] = "empty_file"
    data = good.read_bytes()
    (subj / "truncated.jpg").write_bytes(data[: len(data) // 3]); expected["truncated.jpg"] = "corrupt"
    (subj / "text.jpg").write_text("this is not a picture\n"); expected["text.jpg"] = "not_an_image"
    photo.convert("CMYK").save(subj / "cmyk.jpg", quality=90); expected["cmyk.jpg"] = None
    grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(subj / "grey16.png"); expected["grey16.png"] = None
    pal = photo.convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    pal.save(subj / "palette.png", transparency=0); expected["palette.png"] = None
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    photo.transpose(Image.ROTATE_90).save(subj / "exif_rotated.jpg", exif=exif.tobytes(), quality=90)
    expected["exif_rotated.jpg"] = None
    (subj / "bomb.png").write_bytes(png_header_only(20000, 20000)); expected["bomb.png"] = "decompression_bomb"
    (subj / "notes.txt").write_text("not an image at all"); expected["notes.txt"] = "unsupported_extension"
    # One flipped bit in the entropy-coded data: Pillow decodes it without a word into a wrong picture,
    # libjpeg warns ("Corrupt JPEG data: 163 extraneous bytes before marker 0xd9"); a corrupt photo (issue 15).
    flipped = bytearray(data)
    flipped[len(data) // 2 + 1] ^= 1
    (subj / "bitflip.jpg").write_bytes(bytes(flipped)); expected["bitflip.jpg"] = "corrupt"
    # A PNG whose pixel data's checksum (IDAT CRC) is wrong: Pillow skips the check, libpng does not.
    png = bytearray((subj / "grey16.png").read_bytes())
    at = png.find(b"IDAT")
    png[at + 4 + int.from_bytes(png[at - 4:at], "big")] ^= 1
    (subj / "bad_crc.png").write_bytes(bytes(png)); expected["bad_crc.png"] = "corrupt"
    return expected


# --------------------------------------------------------------------------- tiny Stable Diffusion

TINY_SD_SIZE = 16
"""Side of the images of conftest's ``tiny`` pipeline, pixels (its autoencoder halves it: 8 x 8 latents)."""


def clip_tokenizer(folder: Path, words: list[str]) -> object:
    """A CLIP tokenizer over ``words`` (others fall back to single letters), built from files written here."""
    import transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in words:
        vocab[f"{w}</w>"] = len(vocab)
    for c in "abcdefghijklmnopqrstuvwxyz,.":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(f"{c}</w>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: unknown words split into letters
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                      model_max_length=77, pad_token="<|endoftext|>")


# --------------------------------------------------------------------------- tiny shards and training params

TINY = {"embed": {"image_size": 32, "batch_size": 64,
                  "embedded": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 64, "patch_size": 8, "projection_dim": 16}},
        "train": {"hidden": 32, "feature_dim": 8, "epochs": 3, "batch_size": 8, "checkpoint_every": 2}}
"""A tiny embedded backbone and tiny heads: what ``train_params`` puts over the repository's params."""


def synthetic_groups(n_subjects: int, size: int = 32) -> list[tuple[str, dict[str, bytes]]]:
    """Groups with real factor structure: a coloured square (the subject) whose orientation is the pose,
    on a striped background whose colour and phase are the background. Returns (key, encoded members)."""
    rng = np.random.default_rng(0)
    out = []
    yy, xx = np.mgrid[0:size, 0:size]
    for s in range(n_subjects):
        colour = rng.integers(40, 255, 3)
        poses, backs = rng.uniform(0, np.pi, 2), rng.integers(0, 255, (2, 3))

        def render(p, bgc, colour=colour):
            img = np.empty((size, size, 3), np.uint8)
            img[:] = bgc
            img[(xx // 4) % 2 == 0] //= 2
            c, si = np.cos(p), np.sin(p)
            u, v = (xx - size / 2) * c + (yy - size / 2) * si, -(xx - size / 2) * si + (yy - size / 2) * c
            inside = (abs(u) < size / 4) & (abs(v) < size / 8)
            img[inside] = colour
            return img, (inside * 255).astype(np.uint8)

        views = {name: View(*render(poses[pi], backs[bi])) for name, pi, bi in (("anchor", 0, 0), ("bg", 0, 1), ("pose", 1, 0))}
        rec = {"source": "test", "pose": {"P0": {"yaw": float(np.degrees(poses[0]))}, "P1": {"yaw": float(np.degrees(poses[1]))}},
               "background": {"B0": f"{'stripes' if s % 2 else 'dots'}:{s}0", "B1": f"{'dots' if s % 3 else 'stripes'}:{s}1"}}
        g = SubjectGroup(f"g{s:04d}", f"subj:{s}", "box", f"a box {s}", views, rec)
        out.append((g.key, g.encode(90)))
    return out


def train_params(tmp: Path, **train):
    """(path, parsed params): the repository's params with the ``TINY`` backbone and heads, the feature cache
    under ``tmp`` and ``train`` over train.*, written to ``tmp/params.yaml``."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["embed"] = TINY["embed"]
    raw["train"] = {**TINY["train"], "cache_dir": str(tmp / "cache"), **train}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, load_params(path)


def tiny_raw(generate: dict, train: dict) -> dict:
    """The repository's params (as plain data) on a tiny profile: 64 px views on one generate worker, a
    tiny embedded backbone, 2 epochs, 20 bootstrap draws, 2 contact-sheet groups; ``generate`` and
    ``train`` over those sections."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["generate"].update({"image_size": 64, "workers": 1, **generate})
    raw["shard"]["contact_sheet_groups"] = 2
    raw["embed"].update({"image_size": 64, "embedded": {"hidden_size": 32, "num_hidden_layers": 1,
                                                         "num_attention_heads": 2, "intermediate_size": 64,
                                                         "patch_size": 16, "projection_dim": 16}})
    raw["train"].update({"epochs": 2, **train})
    raw["evaluate"].update({"n_boot": 20})
    return raw


def tiny_params(tmp: Path, **generate) -> Path:
    """The repository's params on a profile that runs the whole pipeline in well under a minute, with
    ``generate`` over generate.*, written to ``tmp/params.yaml``."""
    raw = tiny_raw({"n_groups": 24, "sources": {"procedural": 1.0}, **generate},
                   {"batch_size": 8, "cache_dir": str(tmp / "cache")})
    raw["orchestrate"]["workers"] = 1
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --------------------------------------------------------------------------- releases


def member_texts(release: Path, dest: Path) -> dict[str, bytes]:
    """Every member of the extracted release as bytes to search: Parquet tables decoded to JSON (their
    pages may be compressed), each member of a shard tar on its own."""
    from spotdiff.publish.verify import safe_extract

    top = safe_extract(release, dest)
    out = {}
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        rel = path.relative_to(top).as_posix()
        if path.suffix == ".parquet":
            out[rel] = json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
        elif path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    out[f"{rel}/{m.name}"] = tar.extractfile(m).read() if m.isfile() else m.name.encode()
        else:
            out[rel] = path.read_bytes()
    return out


LOCAL_MARKERS = ("/work/", "/tmp/")
"""Beginnings of local absolute paths that no release member may contain (this project's machines)."""


def local_paths_in(texts: dict[str, bytes], *roots: Path) -> dict[str, list[str]]:
    """Member -> the local paths found in it: each of ``roots`` (as given and resolved), ``LOCAL_MARKERS``."""
    needles = {*LOCAL_MARKERS, *(str(r) for r in roots), *(str(Path(r).resolve()) for r in roots)}
    found = {name: sorted(n for n in needles if n.encode() in text) for name, text in texts.items()}
    return {k: v for k, v in found.items() if v}
