"""SpotDiff encoder: loss terms (golden values), expert supervision, feature cache, checkpoints,
exact resume and DDP equivalence, on a tiny real embedded backbone and small real shards (conftest's
``shards``)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import synthetic_groups, train_params
from spotdiff.config import load_params
from spotdiff.model.embed import ImageEncoder
from spotdiff.common.shardset import split_tars
from spotdiff.model import cache, checkpoint
from spotdiff.model.encoder import SpotDiffEncoder, remove_components, window_dims
from spotdiff.common.factors import factor_ids, yaw_bin
from spotdiff.model.losses import (expert_triplet, factor_invariance, orthogonality, stage1_losses,
                                   subject_contrastive)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- loss terms


def test_orthogonality_golden_values():
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert orthogonality(e1, e2).item() == pytest.approx(0.0)
    assert orthogonality(e1, -2 * e1).item() == pytest.approx(1.0)  # anti-parallel counts as aligned
    diag = torch.tensor([[1.0, 1.0]])
    assert orthogonality(e1, diag).item() == pytest.approx(0.5)  # cos 45 deg squared
    # three sets: pairs (e1,e2)=0, (e1,diag)=0.5, (e2,diag)=0.5 -> mean 1/3
    assert orthogonality(e1, torch.tensor([[0.0, 1.0]]), diag).item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        orthogonality(e1)


def test_expert_triplet_golden_values():
    a = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[0.0, 1.0]])
    assert expert_triplet(a, a, c, margin=0.5).item() == pytest.approx(0.0)  # separated by cos 1 > 0.5
    assert expert_triplet(a, a, a, margin=0.5).item() == pytest.approx(0.5)  # collapsed: loss = margin
    assert expert_triplet(a, c, a, margin=0.5).item() == pytest.approx(0.5 * (1.5 + 0.5))  # inverted


def _supcon_loop(z: torch.Tensor, labels: list[int], t: float, excluded: set[tuple[int, int]]) -> float:
    """Independent SupCon reference, one image at a time."""
    z = torch.nn.functional.normalize(z, dim=-1)
    losses = []
    for i in range(len(z)):
        others = [k for k in range(len(z)) if k != i]
        denom = math.log(sum(math.exp(float(z[i] @ z[k]) / t) for k in others))
        pos = [p for p in others if labels[p] == labels[i] and (i, p) not in excluded]
        losses.append(-sum(float(z[i] @ z[p]) / t - denom for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_subject_contrastive_matches_reference():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 3, 4, generator=g)
    labels = torch.tensor([0, 1, 0])  # groups 0 and 2 are one subject
    flat = s.reshape(9, 4)
    lab = [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert subject_contrastive(s, labels, 0.5, shared_background_positives=True).item() == \
        pytest.approx(_supcon_loop(flat, lab, 0.5, set()), rel=1e-5)
    # anchor (view 0) and pose (view 2) of one group share a background: not positives by default
    excluded = {(3 * g + 0, 3 * g + 2) for g in range(3)} | {(3 * g + 2, 3 * g + 0) for g in range(3)}
    assert subject_contrastive(s, labels, 0.5).item() == pytest.approx(_supcon_loop(flat, lab, 0.5, excluded), rel=1e-5)


def test_expert_supervision_on_a_hand_made_batch():
    """Features with explicit pose, background and subject coordinates: the experts that read the right
    coordinates score ~0, swapped experts score high, and entangled features are penalised."""
    rng = np.random.default_rng(0)
    b = 16
    subj = rng.normal(size=(b, 1, 4)).repeat(3, axis=1)                      # same for all views of a group
    pose = rng.normal(size=(b, 2, 4))                                        # P0, P1
    back = rng.normal(size=(b, 2, 4))                                        # B0, B1
    pose_v = np.stack([pose[:, 0], pose[:, 0], pose[:, 1]], 1)              # anchor P0, bg P0, pose P1
    back_v = np.stack([back[:, 0], back[:, 1], back[:, 0]], 1)              # anchor B0, bg B1, pose B0
    z = np.zeros((b, 3, 4))
    as_t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    # disjoint coordinates: subject, pose and background features are orthogonal
    out = {"subject": as_t(np.concatenate([subj, z, z], -1)), "pose": as_t(np.concatenate([z, pose_v, z], -1)),
           "background": as_t(np.concatenate([z, z, back_v], -1))}
    w = {"subject": 1.0, "pose": 1.0, "background": 1.0, "orthogonality": 1.0}
    labels = torch.arange(b)
    good = stage1_losses(out, labels, margin=0.2, temperature=0.1, weights=w)
    swapped = stage1_losses({**out, "pose": out["background"], "background": out["pose"]}, labels,
                            margin=0.2, temperature=0.1, weights=w)
    entangled = stage1_losses({**out, "subject": out["subject"] + out["pose"]}, labels,
                              margin=0.2, temperature=0.1, weights=w)
    assert good["orthogonality"].item() == pytest.approx(0.0, abs=1e-6)
    assert good["pose"].item() < 0.05 and good["background"].item() < 0.05
    assert swapped["pose"].item() > 0.3 and swapped["background"].item() > 0.3
    assert entangled["orthogonality"].item() > 0.05
    assert entangled["subject"].item() > good["subject"].item()
    assert good["total"].item() == pytest.approx(sum(good[k].item() for k in w))


def test_factor_invariance_known_answers():
    g = torch.Generator().manual_seed(3)
    y = torch.arange(400) % 4
    # each class its own point: all variance is between classes
    points = torch.eye(4)[y] * 3.0
    assert factor_invariance(points, y).item() == pytest.approx(1.0, abs=1e-6)
    # features that ignore the label: only sampling noise is explained (about (classes - 1) / n)
    noise = torch.randn(400, 16, generator=g)
    assert factor_invariance(noise, y).item() < 0.02
    # the label on one of 16 coordinates, noise on the rest: in between
    mixed = noise.clone()
    mixed[:, 0] += 4.0 * (y.float() - 1.5)
    assert 0.1 < factor_invariance(mixed, y).item() < 0.9
    # unlabelled rows (-1) are left out; one class left: nothing to explain
    assert factor_invariance(points, torch.where(y == 0, y, -1)).item() == 0.0
    assert factor_invariance(torch.cat([points[:4], noise[:4, :4]]), torch.tensor([0, 1, 2, 3, -1, -1, -1, -1])).item() \
        == pytest.approx(1.0, abs=1e-6)
    # differentiable: the gradient moves the class means together
    x = mixed.clone().requires_grad_(True)
    factor_invariance(x, y).backward()
    assert x.grad[:, 0].abs().sum() > 0


def test_factor_ids_from_records():
    recs = [{"pose": {"P0": {"yaw": 10.0}, "P1": {"yaw": 170.0}}, "background": {"B0": "noise:1", "B1": "pattern:2"}},
            {"pose": {"kind": "affine"}, "background": {"B0": "photo:3", "B1": "noise:4"}}]
    ids = factor_ids(recs)
    assert ids["pose"].tolist() == [[0, 0, 2], [-1, -1, -1]]                  # anchor P0, bg P0, pose P1
    assert ids["background"].tolist() == [[0, 1, 0], [2, 0, 2]]               # noise, pattern, photo (sorted)
    assert [yaw_bin(a) for a in (-44.0, 46.0, 180.0, -91.0, 315.0)] == [0, 1, 2, 3, 0]


def test_stage1_invariance_term_sums_the_factors():
    g = torch.Generator().manual_seed(4)
    b = 32
    out = {k: torch.randn(b, 3, 6, generator=g) for k in ("subject", "pose", "background")}
    yaw = torch.randint(0, 4, (b, 3), generator=g)
    out["subject"][..., 0] += 5.0 * yaw  # the subject feature carries the yaw bin
    kind = torch.randint(0, 3, (b, 3), generator=g)
    w = {"subject": 0.0, "pose": 0.0, "background": 0.0, "orthogonality": 0.0, "invariance": 2.0}
    both = stage1_losses(out, torch.arange(b), margin=0.2, temperature=0.1, weights=w,
                         factors={"pose": yaw, "background": kind})
    pose_only = stage1_losses(out, torch.arange(b), margin=0.2, temperature=0.1, weights=w, factors={"pose": yaw})
    none = stage1_losses(out, torch.arange(b), margin=0.2, temperature=0.1, weights=w)
    assert pose_only["invariance"].item() > 0.3 and none["invariance"].item() == 0.0
    assert both["invariance"].item() == pytest.approx(
        pose_only["invariance"].item() + factor_invariance(out["subject"].reshape(-1, 6), kind.reshape(-1)).item(), rel=1e-5)
    assert both["total"].item() == pytest.approx(2.0 * both["invariance"].item(), rel=1e-5)


def test_remove_components_is_orthogonal_to_every_expert():
    g = torch.Generator().manual_seed(1)
    x, p, q = (torch.randn(5, 6, generator=g) for _ in range(3))
    y = remove_components(x, p, q)
    assert torch.allclose((y * p).sum(-1), torch.zeros(5), atol=1e-5)
    assert torch.allclose((y * q).sum(-1), torch.zeros(5), atol=1e-5)
    model = SpotDiffEncoder(6, 8, 6, project=True)
    out = model(x)
    assert orthogonality(out["subject"], out["pose"]).item() < 1e-8


def test_window_dims_picks_the_central_cells():
    # 3 leading values (image embedding), then a 4x4 grid of 2-value cells: cell (r, c) starts at 3 + 2(4r + c).
    assert window_dims(35, 4, 2, 2).tolist() == [13, 14, 15, 16, 21, 22, 23, 24]  # cells (1,1) (1,2) (2,1) (2,2)
    assert window_dims(35, 4, 2, 4).tolist() == list(range(3, 35))
    with pytest.raises(ValueError, match="parity"):
        window_dims(35, 4, 2, 3)
    with pytest.raises(ValueError, match="does not fit"):
        window_dims(20, 4, 2, 2)


def test_subject_head_reads_only_its_window(tmp_path):
    # The subject feature ignores the grid cells outside the window (the surroundings: background); the
    # experts read everything. The layout is in the exported config, so a reloaded model keeps it.
    from spotdiff.model.trained import load_model

    torch.manual_seed(0)
    model = SpotDiffEncoder(35, 8, 4, grid=4, cell_dim=2, window=2).eval()
    x = torch.randn(5, 35)
    y = x.clone()
    outside = np.setdiff1d(np.arange(35), window_dims(35, 4, 2, 2))
    y[:, outside] += torch.randn(5, len(outside))
    a, b = model(x), model(y)
    assert torch.equal(a["subject"], b["subject"])
    assert not torch.allclose(a["pose"], b["pose"]) and not torch.allclose(a["background"], b["background"])
    y[:, 13] += 1.0  # inside the window
    assert not torch.allclose(a["subject"], model(y)["subject"])
    checkpoint.save(tmp_path / "m.safetensors", model=model.state_dict(), meta={"encoder": model.config()})
    again, _ = load_model(tmp_path / "m.safetensors")
    assert torch.equal(again(x)["subject"], a["subject"])


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip_with_optimizer_state(tmp_path):
    torch.manual_seed(0)
    model = SpotDiffEncoder(6, 8, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        sum(v.pow(2).sum() for v in model(torch.randn(4, 6)).values()).backward()
        opt.step()
    checkpoint.save(tmp_path / "c.safetensors", model=model.state_dict(), optimizer=opt.state_dict(), meta={"step": 2})
    weights, state, meta = checkpoint.load(tmp_path / "c.safetensors")
    other = SpotDiffEncoder(6, 8, 4)
    other.load_state_dict(weights)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-2)
    opt2.load_state_dict(state)
    assert meta == {"step": 2}
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt2.state_dict()["state"][idx][name]))
    with pytest.raises(FileNotFoundError, match="nope"):
        checkpoint.load(tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------- shards, cache, training


def test_feature_cache_hit_miss_and_damage(shards, tmp_path):
    _, params = train_params(tmp_path)
    enc = ImageEncoder.from_config(params.embed)
    fs, hit = cache.load_or_build(shards, "train", enc, tmp_path / "c")
    assert not hit and fs.features.shape == (len(fs), 3, enc.feature_dim) and len(fs) > 30
    again, hit = cache.load_or_build(shards, "train", enc, tmp_path / "c")
    assert hit and np.array_equal(again.features, fs.features) and again.keys == fs.keys
    assert np.allclose(fs.features[0], enc.features(cache.decode_group(
        dict(next(iter(__import__("spotdiff.common.tars", fromlist=["x"]).read_samples(
            split_tars(shards, "train")[0][0])))[1]))[1]), atol=1e-5)
    # another backbone (different seed) -> another entry
    other = ImageEncoder.from_config(params.embed.model_copy(
        update={"embedded": params.embed.embedded.model_copy(update={"seed": 1})}))
    _, hit = cache.load_or_build(shards, "train", other, tmp_path / "c")
    assert not hit
    # a damaged entry is rebuilt, not trusted
    entry = next((tmp_path / "c").glob(f"train-{cache.cache_key(enc.identity, split_tars(shards, 'train'))}*"))
    entry.write_bytes(b"garbage")
    fs2, hit = cache.load_or_build(shards, "train", enc, tmp_path / "c")
    assert not hit and np.array_equal(fs2.features, fs.features)


def test_bad_samples_are_skipped_and_counted(tmp_path):
    groups = synthetic_groups(3)
    bad = dict(groups[1][1])
    bad["bg.jpg"] = bad["bg.jpg"][:40]
    nojson = {k: v for k, v in groups[2][1].items() if k != "json"}
    from spotdiff.common.tars import write_samples

    tar = tmp_path / "train-000000.tar"
    write_samples(tar, [groups[0], (groups[1][0], bad), (groups[2][0], nojson)])
    fs = cache.build([(tar, "x")], ImageEncoder.from_config(train_params(tmp_path)[1].embed))
    assert fs.keys == [groups[0][0]] and fs.skipped == {"corrupt_image": 1, "missing_member": 1}


def _losses(path: Path) -> list[list[float]]:
    with path.open() as f:
        return [[float(x) for x in row] for row in list(csv.reader(f))[1:]]


def test_train_outputs_and_exact_resume(shards, tmp_path, monkeypatch):
    from spotdiff.model.trained import load_model
    from spotdiff.train.run import train

    _, params = train_params(tmp_path)
    full = train(shards, tmp_path / "full", params)
    assert full.steps > 4 and (tmp_path / "full/losses.png").stat().st_size > 5000
    for name in ("model.safetensors", "config.json", "losses.csv", "val.csv", "summary.json", "checkpoint.safetensors"):
        assert (tmp_path / "full" / name).is_file(), name
    cut = full.steps // 2
    part = train(shards, tmp_path / "resumed", params, max_steps=cut)
    assert part.steps == cut and not (tmp_path / "resumed/model.safetensors").exists()
    rest = train(shards, tmp_path / "resumed", params)
    assert rest.resumed_from == cut and rest.cache_hit
    assert _losses(tmp_path / "resumed/losses.csv") == _losses(tmp_path / "full/losses.csv")
    a, _ = load_model(tmp_path / "full/model.safetensors")
    b, meta = load_model(tmp_path / "resumed/model.safetensors")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert meta["backbone_identity"].startswith("embedded:seed=0")
    # other params -> the checkpoint is not resumed
    _, other = train_params(tmp_path, lr=0.01)
    assert train(shards, tmp_path / "resumed", other).resumed_from == 0
    # other library code (dvc reruns train after a code edit) -> the finished checkpoint is not resumed
    train(shards, tmp_path / "code", params)
    monkeypatch.setattr("spotdiff.train.run.code_digest", lambda entry: "edited")
    assert train(shards, tmp_path / "code", params).resumed_from == 0


def test_best_epoch_picks_the_lowest_monitor_and_stops_after_patience():
    from spotdiff.config import TrainConfig
    from spotdiff.config.train import EarlyStopping
    from spotdiff.train.run import TERMS, best_epoch

    assert EarlyStopping.model_fields["monitor"].annotation.__args__ == TERMS  # the config names val.csv's columns

    def hist(*totals):
        return [[i + 1, 7 * (i + 1), t, *[0.0] * (len(TERMS) - 1)] for i, t in enumerate(totals)]

    cfg = TrainConfig(early_stopping={"patience": 2})
    assert best_epoch([], cfg) == (None, False)
    assert best_epoch(hist(3.0, 2.0, 2.5), cfg) == (1, False)
    assert best_epoch(hist(3.0, 2.0, 2.5, 2.0), cfg) == (1, True)  # equal is no new best
    assert best_epoch(hist(3.0, float("nan"), float("nan")), cfg) == (0, True)
    assert best_epoch(hist(3.0, 2.95, 2.9), TrainConfig(early_stopping={"patience": 2, "min_delta": 0.1})) == (0, True)
    assert best_epoch(hist(3.0, 2.0, 2.5, 2.6), TrainConfig(early_stopping={"patience": 0})) == (3, False)  # off: the last


def test_early_stopping_saves_the_best_epoch_and_resumes_exactly(shards, tmp_path):
    """patience 2 with a min_delta no epoch can beat: epoch 1 is the best, training stops after epoch 3 and
    the model is epoch 1's weights (those of a 1-epoch run), also when resumed between the best and the stop."""
    import json

    from spotdiff.model.trained import load_model
    from spotdiff.train.run import train

    _, params = train_params(tmp_path, epochs=10, early_stopping={"patience": 2, "min_delta": 1e6})
    res = train(shards, tmp_path / "es", params)
    spe = res.steps // 3
    assert res.stopped == "early_stopping" and res.steps == 3 * spe
    assert res.best == {"epoch": 1, "step": spe, "monitor": "total", "value": res.best["value"]}
    summary = json.loads((tmp_path / "es/summary.json").read_text())
    assert summary["stopped"] == "early_stopping" and summary["best"]["step"] == spe
    assert summary["val_best"]["total"] == pytest.approx(res.best["value"], abs=1e-5)
    _, one = train_params(tmp_path, epochs=1, early_stopping={"patience": 0})
    ref = train(shards, tmp_path / "one", one)
    assert ref.stopped == "epochs" and ref.best["step"] == spe
    best = (tmp_path / "es/model.safetensors").read_bytes()
    assert best == (tmp_path / "one/model.safetensors").read_bytes()
    # interrupted after the best epoch, before the stop: the resumed run saves the same bytes
    train(shards, tmp_path / "cut", params, max_steps=2 * spe + 1)
    assert not (tmp_path / "cut/model.safetensors").exists()
    rest = train(shards, tmp_path / "cut", params)
    assert rest.resumed_from == 2 * spe + 1 and rest.stopped == "early_stopping" and rest.steps == 3 * spe
    for name in ("model.safetensors", "summary.json", "val.csv", "losses.csv"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "es" / name).read_bytes(), name
    # a finished, stopped run resumed again trains no further and writes the same model
    again = train(shards, tmp_path / "cut", params)
    assert again.resumed_from == 3 * spe and again.steps == 3 * spe
    assert (tmp_path / "cut/model.safetensors").read_bytes() == best
    model, _ = load_model(tmp_path / "es/model.safetensors")
    last, _, _ = checkpoint.load(tmp_path / "es/checkpoint.safetensors")  # the current weights, beside best.*
    assert not all(torch.equal(v, last[f"heads.{k}"]) for k, v in model.state_dict().items() if f"heads.{k}" in last)


def test_run_key_names_code_and_data_content_not_just_group_names(tmp_path):
    from spotdiff.model.cache import FeatureSet
    from spotdiff.train.run import code_digest, run_key
    from spotdiff.config import TrainConfig

    def fs(value: float, pose: float = 0.0) -> FeatureSet:
        return FeatureSet(["g0", "g1"], ["s0", "s1"], [{"pose": pose}] * 2, np.full((2, 3, 4), value, np.float32))

    cfg = TrainConfig()
    key = run_key(cfg, "backbone", fs(0), fs(0))
    assert run_key(cfg, "backbone", fs(0), fs(0)) == key
    assert run_key(cfg, "backbone", fs(1), fs(0)) != key  # same groups, other pixels
    assert run_key(cfg, "backbone", fs(0), fs(1)) != key  # the validation curve is in the checkpoint too
    assert run_key(cfg, "backbone", fs(0, pose=30), fs(0)) != key  # factor labels come from the records
    assert run_key(cfg, "other", fs(0), fs(0)) != key
    assert code_digest("spotdiff.train.run") == code_digest("spotdiff.train.run") != code_digest("spotdiff.generate.run")


@pytest.mark.parametrize("stage", ["train", "generate"])
def test_code_digest_covers_exactly_the_code_deps_dvc_tracks(stage):
    """The checkpoint's key hashes the stage's import closure, the same files dvc.yaml lists as its code deps:
    a fresh clone that DVC calls up to date writes the same checkpoint bytes. Hashing the whole library made
    an edit to publish/verify.py (no dep of train) change train's checkpoint and so dvc.lock."""
    from spotdiff.common.fingerprint import PACKAGE, closure

    root = PACKAGE.parent
    deps = [d for d in yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]["deps"] if d.startswith("spotdiff")]
    listed = {p.relative_to(root).as_posix() for d in deps
              for p in ([root / d] if (root / d).is_file() else (root / d).rglob("*.py"))}
    files = {p.relative_to(root).as_posix() for p in closure(f"spotdiff.{stage}.run")}
    assert files == listed
    assert "spotdiff/publish/verify.py" not in files


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_processes_follow_the_single_process_curve(shards, tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch and seed reaches the same loss curve
    as 1 process: within 1e-4 relative on every term of every step (float summation order differs)."""
    params_path, params = train_params(tmp_path)
    from spotdiff.train.run import train

    train(shards, tmp_path / "one", params)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           "-m", "flows.cli", "train", "-q", "-p", str(params_path), "--shards", str(shards),
           "--out", str(tmp_path / "two"), "--checkpoint", str(tmp_path / "two.ckpt")]  # not the repo's default
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = np.array(_losses(tmp_path / "one/losses.csv")), np.array(_losses(tmp_path / "two/losses.csv"))
    assert one.shape == two.shape
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)


def test_trainable_backbone_is_fine_tuned_and_reloaded(shards, tmp_path):
    from spotdiff.model.trained import load_trained
    from spotdiff.train.run import train

    _, params = train_params(tmp_path, backbone_trainable=True, epochs=1)
    r = train(shards, tmp_path / "ft", params)
    assert r.steps > 0 and (tmp_path / "ft/backbone.safetensors").is_file()
    heads, encoder = load_trained(tmp_path / "ft", params.embed)
    base = ImageEncoder.from_config(params.embed)
    assert encoder.identity != base.identity and ":fine_tuned:" in encoder.identity
    changed = [k for k, v in base.model.state_dict().items() if not torch.equal(v, encoder.model.state_dict()[k])]
    assert changed, "the backbone did not train"
    with pytest.raises(ValueError, match="trained on backbone"):
        _, frozen = train_params(tmp_path)
        other = frozen.embed.model_copy(update={"embedded": frozen.embed.embedded.model_copy(update={"seed": 3})})
        load_trained(tmp_path / "ft", other)


def test_evaluate_stage_writes_every_output(shards, tmp_path, dreambench, monkeypatch):
    import json

    from spotdiff.evaluate.run import evaluate, headline
    from spotdiff.train.run import train

    path, params = train_params(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["evaluate"] = {"n_boot": 50}
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    train(shards, tmp_path / "m", params)
    # A configured photo folder that is missing is an error naming the input, before any work (not a skip).
    with pytest.raises(FileNotFoundError, match="`photos` input"):
        evaluate(shards, tmp_path / "m", tmp_path / "none", params, photos=tmp_path / "no-photos")
    assert not (tmp_path / "none").exists()
    monkeypatch.chdir(dreambench.parents[2])  # the repository: the metrics name the folder relative to it
    m = evaluate(shards, tmp_path / "m", tmp_path / "e", params, photos=dreambench)
    assert m["real_photos"]["folder"] == "data/photos/dreambench-dev" and len(m["real_photos"]["sha256"]) == 64
    assert m["real_photos"]["features"]["raw_image"]["n_photos"] == len(list(dreambench.glob("*/*.jpg")))
    for name in ("metrics.json", "report.md", "scores.csv", "similarity.png", "projection.png", "probes.png"):
        assert (tmp_path / "e" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "e/metrics.json").read_text())
    assert saved["n_test_groups"] == m["n_test_groups"] > 0 and "seconds" not in saved
    assert set(saved["features"]) == {"subject", "raw_image", "raw_window", "random_projection", "pca", "untrained_head"}
    dim = saved["features"]["subject"]["dim"]
    for r in saved["features"].values():
        top1 = r["retrieval"]["pose_and_bg"]["top1"]
        assert 0 <= top1["low"] <= top1["value"] <= top1["high"] <= 1
        assert "all" not in r["retrieval"]
        probe = r["probes"]["background"]
        assert probe["chance"] > 0 and probe["dim"] <= dim and 0 <= probe["leakage"]["value"]
    for feat in ("random_projection", "pca", "untrained_head"):
        assert saved["features"][feat]["dim"] == dim
    assert saved["criterion"]["verdict"] in ("PASS", "FAIL", "UNMEASURABLE")
    from spotdiff.publish.card import headline_metrics

    card = headline_metrics(saved)  # what the release's dataset card lists: flat names, the verdict first
    assert card["verdict"] == saved["criterion"]["verdict"] and all("." not in k for k in card)
    h = headline(m)
    assert set(h["best_baseline"]) <= set(h["subject"]) and isinstance(h["criterion_pass"], bool)
    assert set(h["best_baseline_name"].values()) <= set(saved["baselines"])
    text = (tmp_path / "e/report.md").read_text()
    assert f"## Verdict: {h['verdict']}" in text and "Real photos" in text
    assert f"{m['n_test_groups']} groups of {m['n_test_subjects']} subjects" in text

    # The untrained-head baseline is exactly where training started: a run whose optimiser never steps.
    from spotdiff.evaluate import baselines
    from spotdiff.model.trained import load_trained

    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: None)
    train(shards, tmp_path / "m0", params, resume=False)
    trained, encoder = load_trained(tmp_path / "m", params.embed)
    start, _ = load_trained(tmp_path / "m0", params.embed)
    x = np.random.default_rng(0).normal(size=(5, trained.in_dim)).astype(np.float32)
    ctx = baselines.Context(trained, x, params.train.seed)
    with torch.no_grad():
        expected = start(torch.from_numpy(x))["subject"].numpy()
    np.testing.assert_allclose(baselines.build(ctx)["untrained_head"](x), expected, rtol=1e-5, atol=1e-6)
