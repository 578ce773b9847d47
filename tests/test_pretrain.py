"""The pretrain stage on a tiny profile: weights that load into the embed backend and change its features,
the same bytes on a second run, a clear error for a missing file, a pool disjoint from generate's subjects."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spotdiff.common.seeding import derive_seed
from spotdiff.config import EmbedConfig, EmbeddedModelConfig, PretrainConfig, load_params
from spotdiff.errors import ConfigError
from spotdiff.model.embed import ImageEncoder
from spotdiff.pretrain import pool
from spotdiff.pretrain.run import WEIGHTS, pretrain
from spotdiff.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
TINY = PretrainConfig(subjects=3, steps=3, batch_size=8, render_size=48, image_size=32, warmup=1)
EMBED = EmbedConfig(device="cpu", image_size=64, embedded=EmbeddedModelConfig(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=16, projection_dim=16))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    stats = pretrain(TINY, EMBED, out)
    assert stats.steps == 3 and stats.images == 12
    return out


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (80, 80, 3), dtype=np.uint8) for _ in range(4)]


def test_outputs_and_loss_curve(trained):
    assert {p.name for p in trained.iterdir()} == {WEIGHTS, "config.json", "loss.csv", "summary.json"}
    rows = (trained / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,top1,lr" and len(rows) == 1 + TINY.steps


def test_weights_load_into_the_embed_backend_and_change_its_features(trained):
    random = ImageEncoder.from_config(EMBED)
    cfg = EMBED.model_copy(update={"embedded": EMBED.embedded.model_copy(update={"weights": str(trained / WEIGHTS)})})
    loaded = ImageEncoder.from_config(cfg)
    assert loaded.identity != random.identity and "+pretrained" in loaded.identity
    assert str(trained) not in loaded.identity  # content, not place: a moved file is the same backbone
    a, b = random.features(_images()), loaded.features(_images())
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-4)
    assert ImageEncoder.from_config(cfg).identity == loaded.identity


def test_same_params_same_bytes(trained, tmp_path):
    """Two runs, each a process of its own as a stage run is, write the same bytes, and the same as this process's
    run (safetensors orders its metadata by hash, differently in every process: ``save_stable`` sorts it)."""
    script = ("import sys, spotdiff; from tests.test_pretrain import TINY, EMBED; "
              "from spotdiff.pretrain.run import pretrain; pretrain(TINY, EMBED, sys.argv[1])")
    for k in range(2):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / str(k))], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    for name in (WEIGHTS, "config.json", "loss.csv"):
        assert _sha(tmp_path / "0" / name) == _sha(tmp_path / "1" / name) == _sha(trained / name), name


def test_missing_weights_name_the_path_and_the_key(tmp_path):
    missing = tmp_path / "nowhere" / WEIGHTS
    cfg = EMBED.model_copy(update={"embedded": EMBED.embedded.model_copy(update={"weights": str(missing)})})
    with pytest.raises(ConfigError) as err:
        ImageEncoder.from_config(cfg)
    assert "embed.embedded.weights" in str(err.value) and str(missing) in str(err.value)


def test_weights_of_another_architecture_are_refused(trained):
    other = EmbedConfig(device="cpu", image_size=64, embedded=EmbeddedModelConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=16,
        projection_dim=16, weights=str(trained / WEIGHTS)))
    with pytest.raises(ConfigError, match="embed.embedded.weights.*architecture"):
        ImageEncoder.from_config(other)


def test_pool_subjects_are_disjoint_from_generates():
    params = load_params(ROOT / "params.yaml")
    ours = {pool.subject_seed(params.pretrain.seed, j) for j in range(params.pretrain.subjects)}
    theirs = {derive_seed(params.generate.seed, "procedural-subject", i) for i in range(10_000)}
    assert not ours & theirs


def test_the_stage_writes_where_the_documented_param_value_points():
    assert f"{STAGES['pretrain'].outputs['out']}/{WEIGHTS}" == "data/pretrain/backbone.safetensors"
