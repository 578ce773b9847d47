"""The real-photo line on the whole DreamBooth set (30 subjects), from a local git snapshot: no download.

``data/photos/dreambench-dev`` (the evaluate stage's input, in git) holds 8 of the 30 subjects of the DreamBooth
dataset (github.com/google/dreambooth, CC BY 4.0; some photos from Unsplash, credited per photo). Leave-one-out
identity retrieval on 8 subjects has intervals about +-0.2 wide; this lays out all 30 subjects (158 photos)
and measures the same line on them, with the evaluate stage's own code (``evaluate.run.feature_maps`` and
``photo_line``: the subject feature and every fair baseline, 95% bootstrap over photo subjects).

    # 1. lay out the set (git-ignored bench/data/dreambooth/<subject>/NN.jpg + SOURCE.md + classes.csv)
    .venv/bin/python bench/realsets.py layout --mirror /work/.mirror/google+dreambooth/repo
    # 2. the line for a trained model (train's output) on its shards, with the params it was trained with
    .venv/bin/python bench/realsets.py line --shards data/shards --model data/train --out /tmp/dreambooth.json \
        [-S embed.embedded.weights=...]

``layout`` reads the snapshot with ``git`` (``ls-tree``, ``cat-file``): the photos are copied as they are
(``--max-side 512``, the default, downscales them to 512 px on the long side at JPEG quality 90, as
``dreambench-dev`` was prepared; 0 keeps the original bytes). Its SOURCE.md records the repository, commit,
licence and the snapshot's own ``references_and_licenses.txt`` verbatim.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import spotdiff  # noqa: F401  (first: the CPU pins)

REPO = "https://github.com/google/dreambooth"
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "dreambooth"


def _git(mirror: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(mirror), *args], check=True, capture_output=True).stdout


def layout(mirror: Path, out: Path, max_side: int = 512) -> dict:
    """Write ``out``/<subject>/NN.jpg for every photo under the snapshot's ``dataset/<subject>/``, plus
    ``SOURCE.md`` (origin, commit, licence, per-photo credits) and ``classes.csv``. Returns a summary."""
    from PIL import Image

    commit = _git(mirror, "rev-parse", "HEAD").decode().strip()
    names = _git(mirror, "ls-tree", "-r", "--name-only", "HEAD", "dataset/").decode().split("\n")
    photos = sorted(n for n in names if n.count("/") == 2 and n.lower().endswith((".jpg", ".jpeg", ".png")))
    if not photos:
        raise SystemExit(f"{mirror}: no dataset/<subject>/<photo> files at HEAD (not a DreamBooth snapshot?)")
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in photos:
        _, subject, file = name.split("/")
        data = _git(mirror, "cat-file", "blob", f"HEAD:{name}")
        target = out / subject / file
        target.parent.mkdir(exist_ok=True)
        if max_side:
            im = Image.open(io.BytesIO(data))
            im.load()
            im = im.convert("RGB")
            if max(im.size) > max_side:
                scale = max_side / max(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            data = buf.getvalue()
        target.write_bytes(data)
        counts[subject] = counts.get(subject, 0) + 1
    licence = _git(mirror, "show", "HEAD:LICENSE.md").decode(errors="replace").split("\n")[0].lstrip("# ").strip()
    credits = _git(mirror, "show", "HEAD:dataset/references_and_licenses.txt").decode(errors="replace")
    classes = _git(mirror, "show", "HEAD:dataset/prompts_and_classes.txt").decode(errors="replace")
    rows = [line.strip() for line in classes.split("\n") if line.count(",") == 1 and not line.startswith("subject")]
    (out / "classes.csv").write_text("subject,class\n" + "\n".join(r for r in rows if r.split(",")[0] in counts) + "\n")
    prep = (f"downscaled to at most {max_side} px on the long side, JPEG quality 90 (as data/photos/dreambench-dev)"
            if max_side else "the original bytes, unchanged")
    (out / "SOURCE.md").write_text(
        f"# DreamBooth dataset, all {len(counts)} subjects ({sum(counts.values())} photos)\n\n"
        f"Origin: {REPO} (Ruiz et al., \"DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven\n"
        f"Generation\", CVPR 2023), `dataset/` at commit {commit}, read from a local git snapshot (no download).\n"
        f"Licence of the repository: {licence} (its LICENSE.md). Several photos are from Unsplash under the Unsplash\n"
        f"licence; the per-photo credits below are the snapshot's `dataset/references_and_licenses.txt`, verbatim.\n"
        f"Photos: {prep}. Nothing else changed. Laid out by `bench/realsets.py layout`; not in git.\n\n"
        f"Photos per subject: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}.\n\n"
        "## references_and_licenses.txt\n\n```\n" + credits.rstrip() + "\n```\n")
    return {"folder": str(out), "commit": commit, "subjects": len(counts), "photos": sum(counts.values())}


def line(shards: Path, model: Path, photos: Path, params_file: str, overrides: list[str]) -> dict:
    """The evaluate stage's real-photo line (``metrics.json``'s ``real_photos``) for ``model`` on ``photos``."""
    from spotdiff.config import load_params
    from spotdiff.evaluate import protocol
    from spotdiff.evaluate.run import feature_maps, photo_line

    params = load_params(params_file, overrides)
    t0 = time.perf_counter()
    _, heads, encoder, _, maps = feature_maps(shards, model, params)
    proto = protocol.Protocol(dim=int(heads.feature_dim), n_boot=params.evaluate.n_boot, seed=params.evaluate.seed)
    res = photo_line(photos, encoder, maps, proto)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["backbone"] = encoder.identity
    return res


def _fmt(iv: dict) -> str:
    lo, hi = iv.get("low"), iv.get("high")
    return f"{iv['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("layout", help="lay out the 30 subjects from a local snapshot of google/dreambooth")
    a.add_argument("--mirror", type=Path, default=Path("/work/.mirror/google+dreambooth/repo"))
    a.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a.add_argument("--max-side", type=int, default=512, help="downscale to this long side, px (0: original bytes)")
    b = sub.add_parser("line", help="leave-one-out identity retrieval of a trained model against the baselines")
    b.add_argument("--shards", type=Path, default=Path("data/shards"))
    b.add_argument("--model", type=Path, default=Path("data/train"))
    b.add_argument("--photos", type=Path, default=DEFAULT_OUT)
    b.add_argument("--params", default="params.yaml")
    b.add_argument("--out", type=Path, help="write the result as JSON here")
    b.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.cmd == "layout":
        res = layout(args.mirror, args.out, args.max_side)
        print(f"{res['subjects']} subjects, {res['photos']} photos -> {res['folder']} (commit {res['commit'][:12]})")
        return res
    res = line(args.shards, args.model, args.photos, args.params, args.overrides)
    c = res["comparison"]
    for name, f in res["features"].items():
        print(f"{name:18s} top-1 {_fmt(f['top1'])}  top-5 {_fmt(f['top5'])}")
    print(f"{f['n_photos']} photos of {f['n_subjects']} subjects; subject vs {c['best_baseline']}: difference "
          f"{_fmt(c['difference'])}: {c['status']} ({res['seconds']} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
