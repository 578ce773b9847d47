"""QA stage: planted defects of every kind among clean generated groups must be caught.

The clean groups come from the real generator (procedural source, 112 px). A share of
them is then damaged in one way each (``PLANTS``), re-encoded and written into a
generate-like folder, with one group made undecodable and one left out of the chunks.
QA must reject >= 95% of the planted groups and <= 5% of the clean ones; the test prints
precision and recall per check.
"""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spotdiff.config import parse_params
from spotdiff.generate.run import generate
from spotdiff.config.qa import QaConfig
from spotdiff.qa.run import run_qa
from spotdiff.qa import checks, duplicates, identity
from spotdiff.qa.run import score_samples
from spotdiff.common.record import VIEWS, SubjectGroup, View, decode_members
from spotdiff.shard.run import iter_generated
from spotdiff.common.tars import member_digests, write_samples

N_GROUPS = 72
SIZE = 112
N_SOURCES = 8
"""The first groups are never planted: duplicates copy from them (so the copy comes later)."""


# --- planting ----------------------------------------------------------------------------------

def _copy(view: View) -> View:
    return View(view.image.copy(), view.mask.copy())


def _over(base: np.ndarray, top: np.ndarray, mask: np.ndarray) -> np.ndarray:
    a = mask.astype(np.float32)[..., None] / 255
    return (top * a + base * (1 - a) + 0.5).astype(np.uint8)


def _warp(img: np.ndarray, m: np.ndarray, border: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    return cv2.boundingRect((mask >= 128).astype(np.uint8))


def plant_empty_mask(g, rng, donor, variant, raw):
    v = VIEWS[variant % 3]
    g.views[v] = View(g.views[v].image.copy(), np.zeros_like(g.views[v].mask))
    return {"mask_area"}


def plant_mask_cut(g, rng, donor, variant, raw):
    # The placement pushed the subject a third of its width past the right edge, in every view.
    x, _, w, _ = _box(g.views["anchor"].mask)
    dx = g.views["anchor"].mask.shape[1] - (x + w) + 0.35 * w
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    for v in VIEWS:
        g.views[v] = View(_warp(g.views[v].image, m, cv2.BORDER_REFLECT), _warp(g.views[v].mask, m, cv2.BORDER_CONSTANT))
    return {"mask_cut"}


def plant_duplicate_view(g, rng, donor, variant, raw):
    # A view of an earlier group: its members byte for byte (exact), or its pixels through
    # JPEG 80 (near).
    v = VIEWS[variant % 3]
    g.views[v] = _copy(donor.views[v])
    if variant == 1:
        img = cv2.imdecode(cv2.imencode(".jpg", donor.views[v].image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1],
                           cv2.IMREAD_UNCHANGED)
        g.views[v] = View(img, donor.views[v].mask.copy())
        return {"near_duplicate_other"}
    raw.update({f"{v}.jpg": donor.members[f"{v}.jpg"], f"{v}.mask.png": donor.members[f"{v}.mask.png"]})
    return {"duplicate_exact"}


def plant_bg_unchanged(g, rng, donor, variant, raw):
    # B1 came out as B0 with a slight tint and noise: the background did not really change.
    a = g.views["anchor"]
    tinted = np.clip(a.image + 3.0 + rng.normal(0, 1.5, a.image.shape), 0, 255)
    g.views["bg"] = View(_over(tinted, a.image, a.mask), a.mask.copy())
    return {"bg_unchanged"}


def plant_pose_unchanged(g, rng, donor, variant, raw):
    # P1 came out as P0 up to a pixel and a degree of jitter.
    a = g.views["anchor"]
    h, w = a.mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-1, 1), 1 + rng.uniform(-0.01, 0.01))
    m[:, 2] += rng.uniform(-1.5, 1.5, 2)
    img, mask = _warp(a.image, m, cv2.BORDER_REFLECT), _warp(a.mask, m, cv2.BORDER_CONSTANT)
    g.views["pose"] = View(_over(a.image, img, mask), mask)
    return {"pose_unchanged"}


def _swap(view: View, donor: View, same_bg: View | None) -> View:
    """``view`` with its subject replaced by ``donor``'s, fitted into the same box."""
    hole = cv2.dilate((view.mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8))
    base = view.image.copy()
    if same_bg is not None:  # the background as another view of it shows it
        shown = (hole > 0) & (same_bg.mask == 0)
        base[shown] = same_bg.image[shown]
        hole[shown] = 0
    base = cv2.inpaint(base, hole, 3, cv2.INPAINT_TELEA)
    x, y, w, h = _box(view.mask)
    dx, dy, dw, dh = _box(donor.mask)
    s = min(w / dw, h / dh)
    m = np.float32([[s, 0, x + w / 2 - s * (dx + dw / 2)], [0, s, y + h / 2 - s * (dy + dh / 2)]])
    img, mask = _warp(donor.image, m, cv2.BORDER_REFLECT), _warp(donor.mask, m, cv2.BORDER_CONSTANT)
    return View(_over(base, img, mask), mask)


def plant_identity_swap(g, rng, donor, variant, raw):
    # The pose (or bg) view shows another subject on the right background.
    if variant % 2 == 0:
        g.views["pose"] = _swap(g.views["pose"], donor.views["pose"], g.views["anchor"])
        return {"identity_pose"}
    g.views["bg"] = _swap(g.views["bg"], donor.views["anchor"], None)
    return {"identity_bg", "bg_pose_changed"}


def plant_blurred(g, rng, donor, variant, raw):
    v = VIEWS[variant % 3]
    g.views[v] = View(cv2.GaussianBlur(g.views[v].image, (0, 0), 2.0), g.views[v].mask.copy())
    return {"blurry"}


def plant_black_frame(g, rng, donor, variant, raw):
    v = VIEWS[variant % 3]
    g.views[v] = View(np.zeros_like(g.views[v].image), g.views[v].mask.copy())
    return {"dark"}


def plant_anchor_copy(g, rng, donor, variant, raw):
    v = ("bg", "pose")[variant % 2]
    g.views[v] = _copy(g.views["anchor"])
    return {"duplicate_exact"}


PLANTS = {
    "empty_mask": plant_empty_mask, "mask_cut": plant_mask_cut, "duplicate_view": plant_duplicate_view,
    "bg_unchanged": plant_bg_unchanged, "pose_unchanged": plant_pose_unchanged,
    "identity_swap": plant_identity_swap, "blurred": plant_blurred, "black_frame": plant_black_frame,
    "anchor_copy": plant_anchor_copy,
}
"""Defect kind -> plant(group, rng, donor group, variant, raw) -> checks expected to fire. A plant
edits the decoded ``group`` in place; ``raw`` takes members to write as they are instead."""
PER_KIND = 3


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(gen dir, {key: (kind, expected checks)}, qa out dir, stats) for one QA run."""
    root = tmp_path_factory.mktemp("qa")
    clean = root / "clean"
    params = parse_params({"generate": {"n_groups": N_GROUPS, "image_size": SIZE, "seed": 5, "workers": 1,
                                        "chunk_size": 24, "sources": {"procedural": 1}}})
    generate(params.generate, clean, progress=False)
    samples = list(iter_generated(clean))
    rng = np.random.default_rng(0)
    kinds = [k for k in PLANTS for _ in range(PER_KIND)]
    targets = rng.choice(np.arange(N_SOURCES, len(samples) - 2), size=len(kinds), replace=False)
    truth: dict[str, tuple[str, set[str]]] = {}
    out = list(samples)
    for n, (i, kind) in enumerate(zip(targets, kinds)):
        key, members = samples[i]
        g = decode_members(members)
        donor = decode_members(samples[n % N_SOURCES][1])
        donor.members = samples[n % N_SOURCES][1]
        raw: dict[str, bytes] = {}
        expected = PLANTS[kind](g, rng, donor, n % PER_KIND, raw)
        out[i] = (key, {**SubjectGroup(g.key, g.subject_id, g.class_name, g.caption, g.views, g.meta).encode(92), **raw})
        truth[key] = (kind, expected)
    # Two groups the decoder must answer for: a truncated JPEG, and a record with no sample.
    key, members = out[-2]
    out[-2] = (key, {**members, "pose.jpg": members["pose.jpg"][: len(members["pose.jpg"]) // 3]})
    truth[key] = ("corrupt_jpeg", {"decode"})
    truth[out[-1][0]] = ("missing_sample", {"decode"})
    gen = root / "gen"
    (gen / "chunks").mkdir(parents=True)
    kept = out[:-1]
    for c in range(0, len(kept), 24):
        write_samples(gen / "chunks" / f"chunk-{c // 24:06d}.tar", kept[c:c + 24])
    for name in ("rejects.parquet", "stats.json"):
        shutil.copyfile(clean / name, gen / name)
    # The defects stand for groups the generator itself got wrong, so its records carry the planted bytes'
    # checksums (damage after generate is test_member_checksums.py's case).
    records = pq.read_table(clean / "records.parquet")
    digests = {k: [{"name": n, "sha256": d} for n, d in member_digests(m).items()] for k, m in kept}
    planted_members = [digests.get(k, m) for k, m in zip(records.column("key").to_pylist(),
                                                          records.column("members").to_pylist())]
    records = records.set_column(records.schema.get_field_index("members"), "members",
                                 pa.array(planted_members, type=records.schema.field("members").type))
    pq.write_table(records, gen / "records.parquet")
    qa_out = root / "qa"
    stats = run_qa(gen, qa_out, QaConfig(workers=1), progress=False)
    return gen, truth, qa_out, stats


def test_planted_defects_are_caught(planted):
    gen, truth, qa_out, stats = planted
    rows = {r["key"]: r for r in pq.read_table(qa_out / "scores.parquet").to_pylist()}
    assert len(rows) == N_GROUPS
    clean = [k for k in rows if k not in truth]
    rejected = {k for k, r in rows.items() if not r["accepted"]}

    print(f"\n{'check':24s} {'flagged':>7s} {'precision':>9s} {'recall':>9s}  (targets: planted kinds expected to fire it)")
    targets_of: dict[str, list[str]] = {}
    for key, (_, expected) in truth.items():
        for c in expected:
            targets_of.setdefault(c, []).append(key)
    for name in checks.CHECKS:
        flagged = [k for k, r in rows.items() if r[f"{name}_pass"] is False]
        targets = targets_of.get(name, [])
        prec = sum(k in truth for k in flagged) / len(flagged) if flagged else float("nan")
        rec = sum(k in flagged for k in targets) / len(targets) if targets else float("nan")
        print(f"{name:24s} {len(flagged):7d} {prec:9.2f} {rec:9.2f}")
    print(f"\n{'planted kind':16s} caught  by its expected check  reasons")
    by_kind: dict[str, list[str]] = {}
    for key, (kind, _) in truth.items():
        by_kind.setdefault(kind, []).append(key)
    for kind, keys in by_kind.items():
        hit = sum(k in rejected for k in keys)
        own = sum(any(c in rows[k]["reasons"] for c in truth[k][1]) for k in keys)
        print(f"{kind:16s} {hit}/{len(keys)}     {own}/{len(keys)}                 "
              + " | ".join(",".join(rows[k]["reasons"]) for k in keys))
        assert own >= len(keys) - 1, f"{kind}: its own check caught only {own} of {len(keys)}"

    recall = sum(k in rejected for k in truth) / len(truth)
    false_alarms = [k for k in clean if k in rejected]
    print(f"\nplanted caught: {recall:.1%} of {len(truth)}; clean rejected: {len(false_alarms)} of {len(clean)} "
          f"({len(false_alarms) / len(clean):.1%}) {[(k, rows[k]['reasons']) for k in false_alarms]}")
    assert recall >= 0.95
    assert len(false_alarms) <= 0.05 * len(clean)


def test_outputs_reconcile_and_report(planted):
    gen, truth, qa_out, stats = planted
    m = json.loads((qa_out / "metrics.json").read_text())
    assert m["samples_in"] == N_GROUPS == m["accepted"] + m["rejected"]
    assert sum(m["rejected_by_first_reason"].values()) == m["rejected"]
    for name, c in m["checks"].items():
        assert c["failed"] == m["rejected_by_reason"].get(name, 0)
    assert stats.as_dict()["accepted"] == m["accepted"]

    order = pq.read_table(gen / "records.parquet", columns=["key"]).column("key").to_pylist()
    scores = pq.read_table(qa_out / "scores.parquet").to_pylist()
    assert [r["key"] for r in scores] == order
    accepted = (qa_out / "accepted.txt").read_text().split()
    assert accepted == [r["key"] for r in scores if r["accepted"]]

    quarantine = pq.read_table(qa_out / "quarantine.parquet").to_pylist()
    assert {r["key"] for r in quarantine} == {r["key"] for r in scores if not r["accepted"]}
    assert all(r["reasons"] and r["first_reason"] == r["reasons"][0] for r in quarantine)
    missing = next(k for k, (kind, _) in truth.items() if kind == "missing_sample")
    corrupt = next(k for k, (kind, _) in truth.items() if kind == "corrupt_jpeg")
    q = {r["key"]: r for r in quarantine}
    assert q[missing]["reasons"] == ["decode"] and "missing" in q[missing]["error"]
    assert q[corrupt]["reasons"] == ["decode"] and q[corrupt]["error"].startswith("pose")
    assert q[corrupt]["mask_area_pass"] is None, "nothing but decode is judged on an undecodable group"

    from spotdiff.common.tars import read_samples
    assert {k for k, _ in read_samples(qa_out / "quarantine.tar")} == set(q) - {missing}

    report = (qa_out / "report.md").read_text()
    for name in checks.CHECKS:
        assert (qa_out / f"hist_{name}.png").stat().st_size > 1000
        assert f"`{name}`" in report
    assert (qa_out / "worst_mask_area.png").exists()


def test_embed_fn_is_pluggable(planted):
    gen, truth, *_ = planted
    samples = list(iter_generated(gen))[:4]
    calls = []

    def embed(images):
        calls.append(len(images))
        assert all(im.ndim == 3 and im.shape[2] == 4 and im.dtype == np.uint8 for im in images)
        return identity.descriptor_encoder()(images)

    results = score_samples(samples, QaConfig(), embed)
    assert calls == [12], "one batched call for the chunk, three crops per group"
    assert all(r.outcomes["identity_bg"] is not None for r in results if r.error is None)


def test_bad_members_are_judged_not_raised(planted):
    gen, *_ = planted
    key, members = next(iter_generated(gen))
    small_mask = cv2.imencode(".png", np.zeros((50, 60), np.uint8))[1].tobytes()
    bad = [("no-json", {k: v for k, v in members.items() if k != "json"}),
           ("null-json", {**members, "json": b"null"}),
           ("garbage-jpeg", {**members, "anchor.jpg": b"not a jpeg"}),
           ("small-mask", {**members, "bg.mask.png": small_mask})]
    results = {r.key: r for r in score_samples(bad, QaConfig())}
    for k in ("no-json", "null-json", "garbage-jpeg"):
        assert results[k].reasons == ["decode"] and results[k].error
    assert results["small-mask"].error is None and "size" in results["small-mask"].reasons


def test_config_rejects_bad_ranges():
    from pydantic import ValidationError

    assert QaConfig().mask.area == (0.01, 0.64)
    for bad in ({"mask": {"area": (0.5, 0.1)}}, {"identity": {"encoder": "clip"}}, {"unknown": 1},
                {"identity": {"pose": (0.9, 1.5)}}):
        with pytest.raises(ValidationError):
            QaConfig.model_validate(bad)


def test_pose_label_degrees():
    render = {"kind": "render", "P0": {"yaw": 10, "pitch": 0, "roll": 0}, "P1": {"yaw": 100, "pitch": 0, "roll": 0}}
    assert checks.pose_label_degrees(render) == pytest.approx(90)
    assert checks.pose_label_degrees({"kind": "affine", "P0": {"identity": True}, "P1": {"flip": True}}) == 180
    affine = {"kind": "affine", "P1": {"flip": False, "rotation": -5.0, "perspective": [0.0, 0.05]}}
    assert checks.pose_label_degrees(affine) == pytest.approx(5 + math.degrees(math.atan(0.1)))
    assert math.isnan(checks.pose_label_degrees({"kind": "sculpted"}))
    assert math.isnan(checks.pose_label_degrees(None))


def test_duplicates_first_occurrence_passes():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, (4, 3, 256), dtype=np.uint8)
    bits[2, 1] = bits[0, 0]
    bits[2, 1, :10] ^= 1  # 10 bits from sample 0's anchor, another subject
    bits[3, 2] = bits[1, 0]  # same subject as sample 1
    entries = [duplicates.HashEntry(s, b, [bytes([i, j]) for j in range(3)])
               for i, (s, b) in enumerate(zip(["a", "b", "c", "b"], bits))]
    entries[3].digests[0] = entries[0].digests[2]
    entries[1].digests[2] = entries[1].digests[0]
    v = duplicates.duplicate_values(entries, 0.07)
    assert [max(d.values()) for d in v["duplicate_exact"]] == [0, 1, 0, 1]
    assert v["near_duplicate_other"][2]["bg"] == pytest.approx(10 / 256)
    assert v["near_duplicate_subject"][3]["pose"] == 0
    assert math.isnan(v["near_duplicate_subject"][0]["anchor"]), "no earlier sample of the subject"
    assert all(math.isnan(x) for x in v["near_duplicate_other"][0].values()), "nothing earlier"
    assert math.isnan(v["near_duplicate_other"][1]["anchor"]), "random hashes: none below the threshold"


def _nearest_by_brute_force(bits, subjects, radius):
    """The nearest-earlier distances in bits (None: none within ``radius``), pair by pair."""
    n, nbits = len(bits), 256
    same = [[None] * 3 for _ in range(n)]
    other = [[None] * 3 for _ in range(n)]
    for i in range(n):
        for j in range(3):
            for k in range(i):
                if bits[k] is None or bits[i] is None:
                    continue
                for m in range(3):
                    d = int(np.sum(bits[i][j] != bits[k][m]))
                    best = same if subjects[i] == subjects[k] else other
                    if d <= radius and (best[i][j] is None or d < best[i][j]):
                        best[i][j] = d
    return same, other, nbits


@pytest.mark.parametrize("threshold", [18 / 256, 0.07, 0.5, 0.0])
def test_bucketed_duplicate_search_equals_all_pairs(threshold):
    """Multi-index hashing finds exactly what comparing every pair finds, distances at the
    threshold included (0.5: so wide that the all-pairs fallback runs; 0: nothing can fail)."""
    rng = np.random.default_rng(7)
    n = 60
    bits = list(rng.integers(0, 2, (n, 3, 256), dtype=np.uint8))
    radius = duplicates.failing_radius(threshold, 256)
    assert radius == {18 / 256: 17, 0.07: 17, 0.5: 127, 0.0: -1}[threshold]
    for k in range(1, n):  # plant copies of an earlier view at and around the threshold
        d = [0, 1, 16, 17, 18, 19, 40][k % 7]
        src, dst = bits[int(rng.integers(0, k))][int(rng.integers(0, 3))], bits[k][int(rng.integers(0, 3))]
        dst[:] = src
        dst[rng.choice(256, d, replace=False)] ^= 1
    bits[5] = None  # did not decode
    subjects = [str(s) for s in rng.integers(0, 5, n)]
    entries = [duplicates.HashEntry(s, b, None) for s, b in zip(subjects, bits)]
    same, other = duplicates.nearest_earlier(entries, threshold)
    want_same, want_other, nbits = _nearest_by_brute_force(bits, subjects, radius)
    for got, want in ((same, want_same), (other, want_other)):
        for i in range(n):
            if bits[i] is None:
                assert got[i] == {}
                continue
            for j, view in enumerate(duplicates.VIEWS):
                expect = float("nan") if want[i][j] is None else want[i][j] / nbits
                assert got[i][view] == pytest.approx(expect, nan_ok=True), (i, view)
    found = [x for rows in (want_same, want_other) for r in rows for x in r if x is not None]
    if radius == 17:
        assert 17 in found and 18 not in found, "the edge cases were planted and judged"


def test_descriptor_is_unit_and_separates_colours():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:80, :60]
    alpha = (((yy - 40) / 38) ** 2 + ((xx - 30) / 28) ** 2 <= 1).astype(np.uint8) * 255

    def crop(colour):
        rgb = np.clip(np.array(colour, float) * (0.6 + 0.4 * xx[..., None] / 60) + rng.normal(0, 4, (80, 60, 3)), 0, 255)
        return np.dstack([rgb.astype(np.uint8), alpha])

    embed = identity.build("descriptor")
    v = embed([crop((200, 40, 40)), crop((205, 45, 40)), crop((40, 60, 200)), np.zeros((0, 0, 4), np.uint8)])
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1) and not v[3].any()
    assert v[0] @ v[1] > 0.95 > v[0] @ v[2]
    with pytest.raises(KeyError):
        identity.build("nope")


def test_identity_embed_encoder_takes_a_typed_embed_config():
    """qa.identity.embed is an EmbedConfig (a bad value fails at load, naming the key), and the `embed`
    identity encoder built from it embeds subject crops (zero vectors for empty ones)."""
    from spotdiff.config import ConfigError, parse_params
    from spotdiff.qa import run as qa_run

    with pytest.raises(ConfigError, match="qa.identity.embed.backend"):
        parse_params({"qa": {"identity": {"encoder": "embed", "embed": {"backend": "nope"}}}})
    tiny = {"image_size": 32, "embedded": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                           "intermediate_size": 32, "patch_size": 16, "projection_dim": 8}}
    cfg = parse_params({"qa": {"identity": {"encoder": "embed", "embed": tiny}}}).qa
    embed = qa_run._encoder(cfg)
    crop = np.zeros((24, 24, 4), np.uint8)
    crop[4:20, 4:20] = (200, 40, 40, 255)
    vecs = embed([crop, np.zeros((24, 24, 4), np.uint8)])
    assert vecs.shape == (2, 8) and np.linalg.norm(vecs[0]) > 0 and not vecs[1].any()


def test_descriptor_of_a_subject_without_interior_is_a_unit_vector():
    """Issue 19: `pack-rocket-002923`'s 47x15 px pose-view crop has no interior after erosion; the gradient
    histogram of nothing came back as int64 and the in-place division stopped the whole QA stage."""
    thin = np.zeros((15, 47, 4), np.uint8)
    thin[..., :3], thin[7, :, 3] = 200, 255
    v = identity.describe(thin)
    assert v.dtype == np.float32 and np.isfinite(v).all() and np.isclose(np.linalg.norm(v), 1)


def test_a_group_whose_measurement_raises_is_one_reject_not_a_stage_failure(planted):
    """A bug met by one group's views rejects that group (reason in `error`), batch-mates keep their scores."""
    gen, *_ = planted
    samples = list(iter_generated(gen))[:3]
    doomed = samples[1][0]
    sizes = {}

    def fragile(images):
        if any(im.shape == sizes.get(doomed) for im in images):
            raise FloatingPointError("planted")
        return identity.descriptor_encoder()(images)

    from spotdiff.qa.prepare import prepare
    sizes[doomed] = prepare(doomed, dict(samples[1][1]), QaConfig()).views["pose"].crop.shape
    results = {r.key: r for r in score_samples(samples, QaConfig(), fragile)}
    assert results[doomed].reasons == ["decode"]
    assert results[doomed].error == "identity: internal_error: FloatingPointError: planted"
    others = [r for k, r in results.items() if k != doomed]
    assert all(r.error is None and r.outcomes["identity_bg"] is not None for r in others)


def test_a_member_the_decoder_warns_about_is_a_decode_failure(planted):
    """Issue 15: one flipped bit in a background JPEG decoded with only a libjpeg warning on stderr ("Corrupt
    JPEG data") and 6910 of 65536 pixels wrong, and QA accepted it; a PNG mask with a damaged IDAT likewise."""
    gen, *_ = planted
    key, members = next(iter_generated(gen))
    rng = np.random.default_rng(0)
    view = cv2.GaussianBlur((rng.random((256, 256, 3)) * 255).astype(np.uint8), (9, 9), 3)
    jpeg = bytearray(cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    jpeg[len(jpeg) // 3] ^= 1  # this bit makes libjpeg warn (most flips do not: member checksums catch those)
    mask = bytearray(members["bg.mask.png"])
    mask[mask.find(b"IDAT") + 8] ^= 0x10
    results = {r.key: r for r in score_samples([("jpeg", {**members, "bg.jpg": bytes(jpeg)}),
                                                ("png", {**members, "bg.mask.png": bytes(mask)}),
                                                ("clean", members)], QaConfig())}
    assert results["jpeg"].reasons == ["decode"] and results["jpeg"].error.startswith("bg: decoder warning: Corrupt JPEG data")
    assert results["png"].reasons == ["decode"] and results["png"].error.startswith("bg: decoder warning: libpng")
    assert results["clean"].error is None
