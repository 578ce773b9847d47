"""bench/realsets.py's layout: a DreamBooth-like git snapshot laid out as <subject>/<photo> with its licence and
credits, read through git only (no work tree, no network)."""

from __future__ import annotations

import importlib.util
import io
import subprocess

import numpy as np
from PIL import Image

from helpers import ROOT


def _module():
    spec = importlib.util.spec_from_file_location("realsets", ROOT / "bench" / "realsets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jpeg(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_layout_copies_every_subject_with_licence_and_credits(tmp_path):
    src = tmp_path / "src"
    files = {"LICENSE.md": b"# Creative Commons Attribution 4.0 International\n\nterms\n",
             "dataset/references_and_licenses.txt": b"cat: Photos taken by someone\ndog: (credit: x)\n",
             "dataset/prompts_and_classes.txt": b"Classes\n\nsubject_name,class\ncat,cat\ndog,dog\nfox,fox\n",
             "dataset/cat/00.jpg": _jpeg(80, 40, 0), "dataset/cat/01.jpg": _jpeg(30, 20, 1),
             "dataset/dog/00.jpg": _jpeg(20, 60, 2), "docs/teaser.jpg": _jpeg(10, 10, 3)}
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], check=True)
    realsets = _module()

    res = realsets.layout(src, tmp_path / "out", max_side=40)
    out = tmp_path / "out"
    assert (res["subjects"], res["photos"]) == (2, 3)
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.jpg")) == ["cat/00.jpg", "cat/01.jpg", "dog/00.jpg"]
    assert Image.open(out / "cat/00.jpg").size == (40, 20) and Image.open(out / "cat/01.jpg").size == (30, 20)
    source = (out / "SOURCE.md").read_text()
    assert "Creative Commons Attribution 4.0 International" in source and "Photos taken by someone" in source
    assert res["commit"] in source
    assert (out / "classes.csv").read_text() == "subject,class\ncat,cat\ndog,dog\n"
    realsets.layout(src, tmp_path / "orig", max_side=0)  # 0: the snapshot's bytes
    assert (tmp_path / "orig/dog/00.jpg").read_bytes() == files["dataset/dog/00.jpg"]
