"""BackgroundBank: deterministic draws, exact regeneration from ids, exclusion, weights, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spotdiff.generate.background.bank import KINDS, PHOTOS, BackgroundBank

# The diffusion kind needs Stable Diffusion weights; tests/test_diffusion.py covers it with a tiny pipeline.
OFFLINE_KINDS = tuple(k for k in KINDS if k != "diffusion")

SIZE = 64  # small: every property below is independent of the size
PROCEDURAL = ("noise", "gradient", "pattern", "horizon")


def _image(seed: int, w: int, h: int) -> Image.Image:
    """A smooth, non-constant test picture (a real folder holds photos, not flat colours)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    rgb = np.stack([np.sin(xx * f + p) for f, p in zip(rng.uniform(2, 9, 3), rng.uniform(0, 6, 3))], -1)
    return Image.fromarray(((rgb * 0.4 + 0.5) * 255 + yy[..., None] * 20).clip(0, 255).astype(np.uint8))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three readable images (one in a subfolder), one corrupt JPEG and one text file."""
    root = tmp_path / "backgrounds"
    (root / "sub").mkdir(parents=True)
    _image(1, 120, 90).save(root / "a.png")
    _image(2, 80, 100).save(root / "b.JPG", quality=90)
    _image(3, 150, 150).save(root / "sub" / "c.webp")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def _bank(kind: str, folder: Path | None = None, size: int = SIZE) -> BackgroundBank:
    return BackgroundBank({kind: 1.0}, size, folder if kind == "folder" else None)


@pytest.mark.parametrize("kind", OFFLINE_KINDS)
def test_every_kind_is_an_rgb_image_with_content(kind, folder):
    bank = _bank(kind, folder)
    for seed in range(4):
        img, bg_id = bank.draw(seed)
        assert bg_id.startswith(kind + ":")
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
        assert img.std() > 2, f"{bg_id} is (nearly) constant"
        assert img.reshape(-1, 3).std(axis=0).max() < 100, f"{bg_id}: contrast too harsh"


@pytest.mark.parametrize("kind", OFFLINE_KINDS)
def test_same_seed_same_bytes_and_make_regenerates_the_draw(kind, folder):
    first, second = _bank(kind, folder), _bank(kind, folder)  # separate instances: no shared state
    for seed in (0, 7, 2**40 + 3, np.int64(123456789)):
        img, bg_id = first.draw(seed)
        again, again_id = second.draw(seed)
        assert bg_id == again_id
        assert img.tobytes() == again.tobytes()
        assert first.make(bg_id).tobytes() == img.tobytes()


def test_numpy_and_python_seeds_agree():
    bank = _bank("noise")
    assert bank.draw(np.int64(42))[1] == bank.draw(42)[1]


@pytest.mark.parametrize("kind", OFFLINE_KINDS)
def test_different_seeds_give_different_backgrounds(kind, folder):
    bank = _bank(kind, folder)
    draws = [bank.draw(seed) for seed in range(12)]
    assert len({bg_id for _, bg_id in draws}) == 12
    assert len({img.tobytes() for img, _ in draws}) == 12


def test_exclude_is_never_returned_and_is_deterministic():
    bank = BackgroundBank({k: 1.0 for k in PROCEDURAL + ("photo",)}, SIZE)
    for seed in range(30):
        img, bg_id = bank.draw(seed)
        other, other_id = bank.draw(seed, exclude=bg_id)
        assert other_id != bg_id and other.tobytes() != img.tobytes()
        assert bank.draw(seed, exclude=bg_id)[1] == other_id
        assert bank.draw(seed, exclude="noise:0")[1] == bg_id  # excluding something else changes nothing


def test_exclude_works_with_a_single_image_folder(tmp_path):
    _image(5, 100, 100).save(tmp_path / "only.png")
    bank = BackgroundBank({"folder": 1.0}, SIZE, tmp_path)
    img, bg_id = bank.draw(3)
    other, other_id = bank.draw(3, exclude=bg_id)
    assert other_id != bg_id and other_id.startswith("folder:only.png:")


def test_weights_choose_kinds_and_zero_weight_is_never_drawn():
    bank = BackgroundBank({"noise": 1.0, "gradient": 3.0, "pattern": 0.0, "photo": 0}, 16)
    kinds = Counter(bank.draw(seed)[1].split(":")[0] for seed in range(400))
    assert set(kinds) == {"noise", "gradient"}
    assert 2.0 < kinds["gradient"] / kinds["noise"] < 4.5


def test_weight_order_does_not_matter():
    a = BackgroundBank({"noise": 1.0, "horizon": 2.0}, 16)
    b = BackgroundBank({"horizon": 2.0, "noise": 1.0}, 16)
    assert [a.draw(s)[1] for s in range(20)] == [b.draw(s)[1] for s in range(20)]


def test_ids_are_self_describing():
    """Any bank regenerates any id, whatever its weights."""
    noise_only, photo_only = _bank("noise"), _bank("photo")
    for bg_id in ("horizon:5", "pattern:99", "gradient:0"):
        assert noise_only.make(bg_id).tobytes() == photo_only.make(bg_id).tobytes()
    for name in PHOTOS:
        img = noise_only.make(f"photo:{name}:17")
        assert img.shape == (SIZE, SIZE, 3) and img.std() > 2, name


def test_folder_kind_reads_only_good_images_and_ids_hold_relative_paths(folder):
    bank = _bank("folder", folder)
    seen = set()
    for seed in range(40):
        img, bg_id = bank.draw(seed)
        kind, rest = bg_id.split(":", 1)
        rel, num = rest.rsplit(":", 1)
        assert kind == "folder" and num.isdigit()
        assert rel in {"a.png", "b.JPG", "sub/c.webp"}, bg_id  # broken.jpg is skipped, notes.txt ignored
        seen.add(rel)
    assert seen == {"a.png", "b.JPG", "sub/c.webp"}


def test_folder_crop_follows_the_source_image(folder):
    """A crop of a mostly red picture stays mostly red: the image really comes from the file."""
    red = np.zeros((100, 140, 3), np.uint8)
    red[..., 0] = 200
    red[::7] = 40  # some texture
    Image.fromarray(red).save(folder / "red.png")
    img = _bank("folder", folder).make("folder:red.png:5")
    assert img[..., 0].mean() > 150 and img[..., 1:].mean() < 30


@pytest.mark.parametrize(("weights", "message"), [
    ({"noise": 1.0, "clouds": 1.0}, "unknown background kind"),
    ({"noise": 0.0, "photo": 0}, "all background weights are 0"),
    ({}, "all background weights are 0"),
    ({"noise": -1.0, "photo": 1.0}, ">= 0"),
    ({"noise": float("nan")}, ">= 0"),
    ({"folder": 1.0}, "no folder was given"),
])
def test_bad_weights_raise_clear_errors(weights, message):
    with pytest.raises(ValueError, match=message):
        BackgroundBank(weights, SIZE)


def test_folder_errors_name_the_kind_the_folder_and_the_problem(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match="folder.*missing.*not a directory"):
        BackgroundBank({"folder": 1.0}, SIZE, missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    with pytest.raises(ValueError, match="folder.*no .jpg.*empty"):
        BackgroundBank({"folder": 1.0}, SIZE, empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="folder.*none of the 1 images.*broken.*could be read"):
        BackgroundBank({"folder": 1.0}, SIZE, broken)
    assert BackgroundBank({"noise": 1.0, "folder": 0.0}, SIZE, broken)  # weight 0: the folder is not used


@pytest.mark.parametrize("bad_id", ["noise", "noise:", "noise:abc", "noise:-3", "clouds:5", "photo:china",
                                    "photo:moon:3", "folder::4", "", "pattern:1:2"])
def test_malformed_ids_raise(bad_id):
    with pytest.raises(ValueError):
        _bank("noise").make(bad_id)


def test_folder_ids_need_a_folder_and_stay_inside_it(folder):
    with pytest.raises(ValueError, match="needs a folder"):
        _bank("noise").make("folder:a.png:1")
    bank = _bank("folder", folder)
    for bad_id in ("folder:../a.png:1", "folder:/etc/passwd.png:1", "folder:notes.txt:1", "folder:gone.png:1",
                   "folder:broken.jpg:1"):
        with pytest.raises(ValueError):
            bank.make(bad_id)


def test_bad_size_raises():
    for size in (0, 8, 64.0, "64"):
        with pytest.raises(ValueError, match="size"):
            BackgroundBank({"noise": 1.0}, size)


def test_procedural_ids_are_the_same_picture_at_any_size():
    """Layout is in units of the side: the 64 px image is the 128 px one, shrunk."""
    for bg_id in ("noise:3", "gradient:4", "horizon:5", "photo:china:6"):
        small = _bank("noise", size=64).make(bg_id).astype(float)
        big = _bank("noise", size=128).make(bg_id).astype(float)
        shrunk = big.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
        assert np.abs(small - shrunk).mean() < 8, bg_id
