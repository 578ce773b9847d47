"""How well the mask-quality score sorts real photos' masks that a person judged by eye.

A verdict file (``bench/verdicts/*.tsv``: ``photo<TAB>subject|not-subject[<TAB>note]``, ``#`` comments) says,
for each photo of a folder, whether the mask ``generate`` cuts it with is the subject alone, as read off the
``spotdiff segments`` sheet. This segments the folder the same way (``photo_sheet.segment_items``, params.yaml's
``generate`` section) and prints the score's ROC AUC, not-subject vs subject, and for each threshold how many
masks ``generate.min_segment_score`` would keep, how many of those are the subject, the share of subject masks
lost and the share of not-subject masks rejected.

    .venv/bin/python bench/mask_verdicts.py --folder data/photos/dreambench-dev --verdicts bench/verdicts/dreambench-dev.tsv
    .venv/bin/python bench/realsets.py layout --mirror /work/.mirror/google+dreambooth/repo   # the 30 DreamBooth subjects
    .venv/bin/python bench/mask_verdicts.py --folder bench/data/dreambooth --verdicts bench/verdicts/dreambooth-unseen.tsv

Photos without a verdict are left out (the DreamBooth folder holds the 8 dreambench-dev subjects too). The
verdicts are one person's judgement of the masks of one version of the segmenter: a change to the segmenter
makes them stale (the sheet must be judged again), a change to the score alone does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import spotdiff  # noqa: F401  (first: the CPU pins)

THRESHOLDS = (0.0, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def read_verdicts(path: Path) -> dict[str, bool]:
    """photo (``subject/NN``, no suffix) -> True when its mask is the subject alone."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in ("subject", "not-subject"):
            raise SystemExit(f"{path}:{n}: expected 'photo<TAB>subject|not-subject', got {line!r}")
        out[parts[0]] = parts[1] == "subject"
    return out


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score of a subject mask > score of a not-subject mask), ties counting half."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, required=True, help="photo folder, generate.folder's layout")
    ap.add_argument("--verdicts", type=Path, required=True, help="photo<TAB>subject|not-subject file")
    ap.add_argument("-p", "--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows and the table as JSON here")
    args = ap.parse_args(argv)

    from spotdiff.config import load_params
    from spotdiff.generate.photo_sheet import folder_items, segment_items

    cfg = load_params(args.params).generate
    verdicts = read_verdicts(args.verdicts)
    items = [it for it in folder_items(args.folder) if it[1].rsplit(".", 1)[0] in verdicts]
    missing = sorted(set(verdicts) - {it[1].rsplit(".", 1)[0] for it in items})
    if missing:
        raise SystemExit(f"{args.folder}: no photo for {len(missing)} verdicts, e.g. {missing[:3]}")
    rows = []
    for row, _, _ in segment_items(items, cfg):
        rows.append({"photo": row.item, "backend": row.backend, "score": row.score,
                     "subject": verdicts[row.item.rsplit(".", 1)[0]]})
        print(f"{row.item}\t{row.backend}\t{row.score:.3f}\t{'subject' if rows[-1]['subject'] else 'not-subject'}",
              file=sys.stderr)
    good = [r["score"] for r in rows if r["subject"]]
    bad = [r["score"] for r in rows if not r["subject"]]
    print(f"{args.folder}: {len(rows)} photos, {len(good)} masks the subject alone; score ROC AUC {auc(good, bad):.3f}")
    print("| min_segment_score | kept | of which the subject | share | subject masks lost | other masks rejected |")
    print("|---:|---:|---:|---:|---:|---:|")
    table = []
    for t in THRESHOLDS:
        kept = [r for r in rows if r["score"] >= t]
        ok = sum(r["subject"] for r in kept)
        row = {"threshold": t, "kept": len(kept), "subject": ok,
               "share": ok / len(kept) if kept else float("nan"),
               "subject_lost": 1 - ok / len(good) if good else float("nan"),
               "other_rejected": 1 - (len(kept) - ok) / len(bad) if bad else float("nan")}
        table.append(row)
        print(f"| {t:.2f} | {len(kept)} | {ok} | {row['share']:.0%} | {row['subject_lost']:.0%} | "
              f"{row['other_rejected']:.0%} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"auc": auc(good, bad), "rows": rows, "table": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
