"""The dataset card (``README.md``) of a SpotDiff10k release: a Hugging Face-style YAML header
plus a human-readable body, built only from the release's own inputs so it is byte-identical
for the same inputs.

Header keys (``yaml.safe_load`` of the text between the first two ``---`` lines):

* ``pretty_name``, ``license``, ``license_name``, ``license_link``, ``license_details``,
  ``size_categories``, ``task_categories``, ``tags``: the Hugging Face dataset-card fields;
* ``configs``: one data_files pattern per split (``shards/<split>-*.tar``), which is how the
  Hugging Face ``webdataset`` loader finds WebDataset shards; splits go by their Hugging Face
  names (``val`` is ``validation``: ``shardset.HF_SPLITS``);
* ``dataset_info``: ``features`` (one per WebDataset member name found in ``index.parquet``, typed by
  ``record.hf_features``: views as images, masks as 8-bit grey images, the ``json`` labels as the
  ``record.LABELS`` struct, so ``datasets.load_dataset`` on the extracted release types every label)
  and ``splits`` (``num_examples`` from ``index.parquet``, ``num_bytes`` = tar bytes on disk
  from ``sizes.json``); only non-empty splits are listed;
* ``spotdiff``: release version, backends, the ``generate:`` params (validated, paths relative to the
  repository), QA pass rates, evaluation headline metrics, model files, sample counts per source, and
  ``environment``: the environment lock's file name and sha256 (``requirements.lock``) and the CPU feature level.

Licence: the data mixes components under different licences, so ``license`` is
``apache-2.0`` only when every used component is (procedural renders and procedural
backgrounds, which the project's Apache-2.0 code makes); otherwise it is ``other`` with
``license_name: spotdiff10k-per-component`` and ``license_details`` mapping each component
actually used (counted from the samples' JSON records) to its licence. ``license_link`` points to the
licence text: Apache's for ``apache-2.0``, else the card's own per-component table (``LICENSE_TABLE``). Packaged photos keep
their own licences (``COMPONENT_LICENSES``); a user's folder photos get the licence the
publisher states (``folder_license``) or ``unknown``; Stable Diffusion outputs fall under the
terms of the weights that made them.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable, Mapping

import yaml

from spotdiff.common.record import hf_features, ordered_members
from spotdiff.common.shardset import HF_SPLITS, SPLITS, hf_configs

PROJECT_LICENSE = "apache-2.0"
"""Licence of the project's code, and so of everything it renders procedurally."""
PROJECT_LICENSE_LINK = "https://www.apache.org/licenses/LICENSE-2.0"
LICENSE_TABLE = "README.md#sources-and-licences"
"""``license_link`` of a per-component (``other``) release: the card's "Sources and licences" section."""

PROCEDURAL_BACKGROUNDS = ("noise", "gradient", "pattern", "horizon")

COMPONENT_LICENSES: dict[str, tuple[str, str]] = {
    # component -> (licence id, attribution / where it comes from). Photo facts are taken from the
    # docstrings of skimage.data and from sklearn/datasets/images/README.txt as installed.
    "subject:procedural": (PROJECT_LICENSE, "3D subjects rendered by SpotDiff's procedural source"),
    "subject:packaged:astronaut": ("public-domain",
                                   "Eileen Collins, NASA Great Images database (scikit-image sample data)"),
    "subject:packaged:chelsea": ("cc0-1.0", "photo by Stefan van der Walt (scikit-image sample data)"),
    "subject:packaged:coffee": ("cc0-1.0", "photo by Rachel Michetti (scikit-image sample data)"),
    "subject:packaged:rocket": ("public-domain", "SpaceX, released into the public domain (scikit-image sample data)"),
    "background:procedural": (PROJECT_LICENSE, "noise, gradient, pattern and horizon backgrounds rendered by SpotDiff"),
    "background:photo:china": ("cc-by-2.0", "danielbuechele on Flickr (scikit-learn sample image china.jpg); "
                                            "attribution required"),
    "background:photo:flower": ("cc-by-2.0", "vultilion on Flickr, per scikit-learn's images/README.txt "
                                             "(flower.jpg); attribution required"),
    "background:photo:brick": ("cc0-1.0", "CC0Textures Bricks25 (scikit-image sample data)"),
    "background:photo:grass": ("cc0-1.0", "linolafett on DeviantArt (scikit-image sample data)"),
    "background:photo:gravel": ("cc0-1.0", "CC0Textures Gravel04 (scikit-image sample data)"),
}

FEATURES: dict[str, tuple[str, str]] = {
    # WebDataset member name -> (type as loaded by Hugging Face datasets, what it holds); see spotdiff/common/record.py.
    "anchor.jpg": ("image (RGB)", "anchor view: the subject in pose P0 on background B0 (RGB JPEG)"),
    "anchor.mask.png": ("image (L)", "soft subject mask of the anchor view (8-bit grey PNG, 255 = subject)"),
    "bg.jpg": ("image (RGB)", "same subject, same pose P0, new background B1 (RGB JPEG)"),
    "bg.mask.png": ("image (L)", "soft subject mask of the bg view"),
    "pose.jpg": ("image (RGB)", "same subject, new pose P1, same background B0 (RGB JPEG)"),
    "pose.mask.png": ("image (L)", "soft subject mask of the pose view"),
    "json": ("struct", "factor labels (JSON; typed in `dataset_info`): key, subject_id, class, caption, source, pose "
                       "P0/P1 (render angles or affine flip, rotation, scale, perspective, homography), background "
                       "B0/B1 ids, placement, segmentation backend and score, seeds, library versions; procedural "
                       "subject and light; photo size, crop and body landmarks; null where a label does not apply"),
    "txt": ("string", "caption (UTF-8)"),
}

TASK_CATEGORIES = ["image-to-image", "text-to-image", "image-feature-extraction"]

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` samples."""
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>10M"


def components(record: Mapping[str, Any]) -> set[str]:
    """Licence components one sample uses (its subject and both backgrounds), from its JSON record."""
    out = set()
    source = str(record.get("source", ""))
    if source == "packaged":
        out.add(f"subject:packaged:{record.get('item', '?')}")
    elif source:
        out.add(f"subject:{source}")
    for bg_id in (record.get("background") or {}).values():
        kind, _, rest = str(bg_id).partition(":")
        if kind in PROCEDURAL_BACKGROUNDS:
            out.add("background:procedural")
        elif kind == "photo":
            out.add(f"background:photo:{rest.split(':', 1)[0]}")
        else:
            out.add(f"background:{kind}")
    return out


def component_license(component: str, *, folder_license: str | None, diffusion_model: str | None) -> tuple[str, str]:
    """(licence id, note) of one component; unknown components say so instead of guessing."""
    if component in COMPONENT_LICENSES:
        return COMPONENT_LICENSES[component]
    kind = component.split(":")[1] if ":" in component else component
    if kind == "folder":
        if folder_license:
            return folder_license, "the publisher's folder of photos (licence as stated by the publisher)"
        return "unknown", "the publisher's folder of photos: licence not stated; ask the publisher before reuse"
    if kind == "diffusion":
        model = diffusion_model or "the configured weights"
        return "other", f"made by Stable Diffusion ({model}): the licence terms of those weights apply"
    return "unknown", "component not in spotdiff.publish.card.COMPONENT_LICENSES"


def licenses(records: Iterable[Mapping[str, Any]], *, folder_license: str | None = None,
             diffusion_model: str | None = None) -> list[dict[str, Any]]:
    """One row per component used: component, license, note, samples (groups that use it), sorted."""
    counts: Counter[str] = Counter()
    for rec in records:
        counts.update(components(rec))
    rows = []
    for comp in sorted(counts):
        lic, note = component_license(comp, folder_license=folder_license, diffusion_model=diffusion_model)
        rows.append({"component": comp, "license": lic, "note": note, "samples": counts[comp]})
    return rows


def overall_license(rows: list[dict[str, Any]]) -> str:
    """``apache-2.0`` when every used component is the project's own render, else ``other``."""
    return PROJECT_LICENSE if rows and all(r["license"] == PROJECT_LICENSE for r in rows) else "other"


def qa_summary(qa: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Counts and per-check pass rates from QA's ``metrics.json`` (or the smaller ``metrics/qa.json``)."""
    if qa is None:
        return None
    rates: dict[str, Any] = {}
    if isinstance(qa.get("checks"), Mapping):
        rates = {k: v.get("pass_rate") for k, v in qa["checks"].items() if isinstance(v, Mapping)}
    elif isinstance(qa.get("check_pass_rate"), Mapping):
        rates = dict(qa["check_pass_rate"])
    out = {k: qa[k] for k in ("samples_in", "accepted", "rejected", "identity_encoder") if k in qa}
    if "rejected_by_reason" in qa:
        out["rejected_by_reason"] = dict(sorted(qa["rejected_by_reason"].items()))
    out["pass_rates"] = dict(sorted(rates.items()))
    return out


MAX_HEADLINE = 24
"""Evaluation metrics shown in the card when the metrics file has no ``headline`` section."""


def headline_metrics(ev: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Headline evaluation numbers: the file's ``headline`` mapping when it has one, else its numeric
    leaves (and ``{"value", "low", "high"}`` intervals) as dotted names, sorted, at most ``MAX_HEADLINE``."""
    if ev is None:
        return None
    if isinstance(ev.get("headline"), Mapping):
        return dict(ev["headline"])
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            flat[prefix] = node
        elif isinstance(node, Mapping):
            if "value" in node and isinstance(node["value"], (int, float)):
                flat[prefix] = {k: node[k] for k in ("value", "low", "high") if k in node}
                return
            for k in sorted(node, key=str):
                walk(f"{prefix}.{k}" if prefix else str(k), node[k])

    walk("", ev)
    return {k: flat[k] for k in sorted(flat)[:MAX_HEADLINE]}


def _fmt(v: Any) -> str:
    if isinstance(v, Mapping) and "value" in v:
        ci = f" [{_fmt(v['low'])}, {_fmt(v['high'])}]" if "low" in v and "high" in v else ""
        return f"{_fmt(v['value'])}{ci}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)


def split_table(index_rows: list[Mapping[str, Any]], sizes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per non-empty split: samples and shards counted in the index, subjects, bytes from sizes.json."""
    out: dict[str, dict[str, int]] = {}
    present = {r["split"] for r in index_rows}
    for split in [s for s in SPLITS if s in present] + sorted(present - set(SPLITS)):
        rows = [r for r in index_rows if r["split"] == split]
        out[split] = {"samples": len(rows), "subjects": len({r["subject_id"] for r in rows}),
                      "shards": len({r["shard"] for r in rows}), "bytes": int(sizes.get(split, {}).get("bytes", 0))}
    return out


def feature_names(index_rows: list[Mapping[str, Any]]) -> list[str]:
    """Member names found in the index, in the writer's order (known names first, then the rest sorted)."""
    return ordered_members(m["name"] for r in index_rows for m in r["members"])


def hf_split(split: str) -> str:
    """A split's name in the card (``val`` -> ``validation``)."""
    return HF_SPLITS.get(split, split)


def render(*, version: str, index_rows: list[Mapping[str, Any]], sizes: Mapping[str, Any],
           generate: Mapping[str, Any], backends: Mapping[str, str], qa: Mapping[str, Any] | None,
           evaluation: Mapping[str, Any] | None, model: Mapping[str, Any] | None, files: list[str],
           folder_license: str | None = None, environment: Mapping[str, Any] | None = None) -> str:
    """The card text. ``files`` are the release's member paths (relative to its top folder);
    ``model`` maps model file names to ``safetensors`` summaries (or config dicts), None without a model;
    ``environment``: ``{"lock": file name, "sha256": digest, "cpu_level": feature level}``: the environment
    lock (its fields None when not given) and the CPU feature level the numeric libraries were pinned to
    (``spotdiff.common.determinism.level``); None: neither is known."""
    records = [json.loads(r["labels"]) for r in index_rows]
    diffusion = generate.get("diffusion")
    diffusion_model = diffusion.get("model") if isinstance(diffusion, Mapping) else None
    lic_rows = licenses(records, folder_license=folder_license, diffusion_model=diffusion_model)
    lic = overall_license(lic_rows)
    splits = split_table(index_rows, sizes)
    feats = feature_names(index_rows)
    total = len(index_rows)
    total_bytes = sum(s["bytes"] for s in splits.values())
    sources = dict(sorted(Counter(str(r.get("source", "")) for r in records).items()))
    segmenters = dict(sorted(Counter(str((r.get("segment") or {}).get("backend", "?")) for r in records).items()))
    qa_s = qa_summary(qa)
    head = headline_metrics(evaluation)

    header: dict[str, Any] = {"pretty_name": f"SpotDiff10k {version}", "license": lic}
    if lic == "other":
        header["license_name"] = "spotdiff10k-per-component"
        header["license_link"] = LICENSE_TABLE
        header["license_details"] = {r["component"]: r["license"] for r in lic_rows}
    else:
        header["license_link"] = PROJECT_LICENSE_LINK
    header |= {
        "size_categories": [size_category(total)],
        "task_categories": list(TASK_CATEGORIES),
        "tags": ["webdataset", "subject-driven-generation", "synthetic", "spotdiff"],
        "configs": hf_configs(splits, "shards/"),
        "dataset_info": {
            "features": hf_features(feats),
            "splits": [{"name": hf_split(s), "num_bytes": v["bytes"], "num_examples": v["samples"]}
                       for s, v in splits.items()],
            "download_size": total_bytes,
            "dataset_size": total_bytes,
        },
        "spotdiff": {
            "version": version,
            "paper": "arXiv:2510.07340",
            "samples": total,
            "sources": sources,
            "segmentation": segmenters,
            "backends": dict(sorted(backends.items())),
            "generate": _plain(generate),
            "qa": qa_s,
            "evaluation": _plain(head),
            "model": _plain(model),
            "environment": _plain(environment),
        },
    }
    y = yaml.safe_dump(header, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    L: list[str] = ["---", y.rstrip("\n"), "---", "", f"# SpotDiff10k {version}", ""]
    L += [f"Subject groups for subject-preserving image generation (SpotDiff, Li et al., arXiv 2510.07340): "
          f"{total} samples in {sum(v['shards'] for v in splits.values())} WebDataset shards. Each sample holds "
          "every view of one subject, so pairs need no join at training time: `anchor` (pose P0, background B0), "
          "`bg` (same pose, new background B1) and `pose` (new pose P1, same background B0), a mask per view, "
          "a caption and a JSON record of factor labels. Splits are by subject: no subject is in two splits.", ""]
    L += ["## Splits", "", "| split | files | samples | subjects | shards | bytes |", "|---|---|---:|---:|---:|---:|"]
    L += [f"| {hf_split(s)} | `shards/{s}-*.tar` | {v['samples']} | {v['subjects']} | {v['shards']} | {v['bytes']} |"
          for s, v in splits.items()]
    L += ["", "## Features (WebDataset members of one sample)", "",
          "The sample key (`__key__`) is the member name before the first dot.", "",
          "| member | type | holds |", "|---|---|---|"]
    L += [f"| `{n}` | {FEATURES.get(n, ('string', ''))[0]} | {FEATURES.get(n, ('', 'undocumented member'))[1]} |"
          for n in feats]
    L += ["", "## Loading", "",
          "With Hugging Face `datasets`, from the extracted release folder (the features above type every label; "
          "splits `train`, `validation`, `test`):", "",
          "```python", "from datasets import load_dataset",
          f"ds = load_dataset('spotdiff10k-{version}')",
          "g = ds['train'][0]  # g['anchor.jpg'] (PIL RGB), g['anchor.mask.png'] (PIL L), g['json'] (labels dict), g['txt']",
          "```", "", "With `webdataset` (masks decoded as 8-bit grey, views as RGB):", "",
          "```python", "import glob", "import io", "import PIL.Image", "import webdataset as wds",
          f"urls = sorted(glob.glob('spotdiff10k-{version}/shards/train-*.tar'))",
          "grey = wds.handle_extension('mask.png', lambda data: PIL.Image.open(io.BytesIO(data)).convert('L'))",
          "ds = wds.WebDataset(urls, shardshuffle=False).decode(grey, 'pil')",
          "sample = next(iter(ds))  # sample['anchor.jpg'], sample['anchor.mask.png'], sample['json'], sample['txt'], ...",
          "```", ""]
    L += ["## Sources and licences", "",
          f"Overall licence: `{lic}`" + ("" if lic != "other" else
                                          " (per component below; a sample carries the licences of its subject "
                                          "and of both backgrounds it uses)") + ".", "",
          "| component | licence | samples | note |", "|---|---|---:|---|"]
    L += [f"| `{r['component']}` | {r['license']} | {r['samples']} | {r['note']} |" for r in lic_rows]
    L += ["", "Samples per source: " + ", ".join(f"{k} {v}" for k, v in sources.items()) + ". "
          "Segmentation backends in the records: " + ", ".join(f"{k} {v}" for k, v in segmenters.items()) + ".", ""]
    L += ["## Backends that produced this release", "",
          "`embedded` means the offline default (procedural renders, packaged photos, classical segmentation, "
          "a seeded CLIP-architecture encoder built from a config); anything else names real weights.", "",
          "| step | backend |", "|---|---|"]
    L += [f"| {k} | {v} |" for k, v in sorted(backends.items())]
    L += ["", "## Generation parameters (`generate:` of params.yaml)", "", "```yaml",
          yaml.safe_dump({"generate": _plain(generate)}, sort_keys=False, default_flow_style=None, width=100).rstrip("\n"),
          "```", ""]
    L += ["## Quality control", ""]
    if qa_s is None:
        L += ["No QA metrics were given to this release.", ""]
    else:
        counts = ", ".join(f"{k.replace('_', ' ')} {qa_s[k]}" for k in ("samples_in", "accepted", "rejected") if k in qa_s)
        L += [f"{counts}." if counts else "", "", "| check | pass rate |", "|---|---:|"]
        L += [f"| {k} | {_fmt(v)} |" for k, v in qa_s["pass_rates"].items()]
        L += [""]
    L += ["## Evaluation", ""]
    if head is None:
        L += ["No evaluation metrics were given to this release.", ""]
    else:
        L += ["Headline metrics (full numbers in `metrics.json`; intervals are bootstrap [low, high]):", "",
              "| metric | value |", "|---|---:|"]
        L += [f"| {k} | {_fmt(v)} |" for k, v in head.items()] + [""]
    L += ["## Model", ""]
    if model is None:
        L += ["No model is packaged with this release.", ""]
    else:
        L += ["| file | content |", "|---|---|"]
        for name, info in sorted(model.items()):
            if isinstance(info, Mapping) and "tensors" in info:
                desc = (f"safetensors: {info['tensors']} tensors, {info['parameters']} parameters "
                        f"({', '.join(info['dtypes'])})")
            else:
                desc = "JSON configuration"
            L += [f"| `model/{name}` | {desc} |"]
        L += [""]
    L += ["## Environment", ""]
    env = environment or {}
    if env.get("lock") is None:
        L += ["No environment lock was given to this release.", ""]
    else:
        L += [f"Built in the environment locked by `{env['lock']}` (sha256 `{env['sha256']}`): "
              "exact versions and hashes of every package, installed with "
              f"`pip install --require-hashes -r {env['lock']}`.", ""]
    if env.get("cpu_level") is not None:
        L += [f"CPU feature level of the numeric code: `{env['cpu_level']}` (numpy, OpenBLAS, OpenCV, torch, MKL and "
              "oneDNN dispatch pinned, one thread; see `spotdiff/common/determinism.py`). The same lock and level "
              "rebuild the same bytes on any x86-64 CPU that has it.", ""]
    L += ["## Known limitations", ""] + [f"- {x}" for x in limitations(records, backends, sources, lic_rows)] + [""]
    L += ["## Files and verification", "",
          "`SHA256SUMS` holds the sha256 of every other file (`sha256sum -c SHA256SUMS` inside the top folder). "
          "`spotdiff verify <release>.tar` re-checks checksums, this header against `shards/index.parquet` "
          "and `shards/sizes.json`, and the sample count of every shard. `metrics.json` holds the full QA and "
          "evaluation metrics, `params.yaml` the parameters that built it (validated, keys sorted).", "",
          "```"] + files + ["```", ""]
    L += ["## Citation", "", "Cite the SpotDiff paper (Li et al., arXiv:2510.07340) when you use this data.", ""]
    return "\n".join(L)


def limitations(records: list[Mapping[str, Any]], backends: Mapping[str, str], sources: Mapping[str, int],
                lic_rows: list[dict[str, Any]]) -> list[str]:
    """Known limitations, stated from what the samples and backends actually are."""
    out = []
    if sources.get("procedural"):
        out.append("Procedural subjects are seeded compositions of a few 3D primitives with simple colours and "
                   "patterns, ray-cast under one fixed light: far simpler than real objects; models trained on "
                   "them alone may not transfer to photos.")
    marked = sum(1 for r in records if r.get("orientation_markers"))
    if marked:
        out.append(f"{marked} procedural subjects carry painted orientation markers (a magenta ball on a stalk out "
                   "of the front, a cyan one out of the back; params `generate.procedural.markers`): they make yaw "
                   "visible but are not part of the object, and a model can learn them instead of the subject.")
    photo = {s: n for s, n in sources.items() if s in ("packaged", "folder")}
    if photo:
        items = {str(r.get("item")) for r in records if r.get("source") in photo}
        out.append(f"{sum(photo.values())} photo groups come from only {len(items)} distinct photos; their pose "
                   "view is a 2D affine/perspective warp of the cut-out, not a new 3D viewpoint.")
    if any((r.get("segment") or {}).get("backend") in ("grabcut", "alpha", "mediapipe") for r in records):
        out.append("Photo masks come from classical or lightweight segmentation (e.g. GrabCut) and can miss thin "
                   "parts or include background; procedural masks are exact.")
    if str(backends.get("embed", "")).startswith("embedded"):
        out.append("The image encoder (`embed` backend) is the embedded seeded CLIP-architecture model, not "
                   "pre-trained CLIP weights: features, identity scores and evaluation numbers computed with it "
                   "measure consistency between views, not semantic identity.")
    if any(r["license"] == "unknown" for r in lic_rows):
        out.append("Some components have no stated licence (see Sources and licences): do not redistribute "
                   "those samples without the owner's permission.")
    out.append("Backgrounds are procedural patterns or a handful of packaged photos: little scene diversity "
               "compared with real photographs.")
    return out


def _plain(x: Any) -> Any:
    """``x`` as plain YAML-safe builtins (tuples -> lists, mappings -> dicts)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def parse_header(text: str) -> dict[str, Any]:
    """The YAML header of a card (between the opening ``---`` line and the next ``---`` line).

    Raises ``ValueError`` naming what is wrong: no header, unterminated header, YAML error, not a mapping.
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ValueError("README.md does not start with a '---' YAML header line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ValueError("README.md: YAML header has no closing '---' line") from None
    try:
        header = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as e:
        raise ValueError(f"README.md: YAML header does not parse: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"README.md: YAML header is a {type(header).__name__}, expected a mapping")
    return header
