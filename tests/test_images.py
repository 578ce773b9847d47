import numpy as np
import pytest
from PIL import Image

from helpers import make_bad_folder, png_header_only
from spotdiff.common.images import BadInput, load_photo


def test_every_awkward_file_is_loaded_or_rejected_with_its_reason(tmp_path, dreambench):
    expected = make_bad_folder(tmp_path, dreambench)
    ref = np.asarray(Image.open(dreambench / "teapot" / "00.jpg").convert("RGB"))
    for name, reason in expected.items():
        if name.endswith(".txt"):
            continue  # extensions are the folder source's business
        path = tmp_path / "teapot" / name
        if reason is None:
            photo = load_photo(path, max_pixels=40_000_000)
            assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3, name
            assert photo.rgb.shape[:2] == ref.shape[:2], f"{name}: upright size {photo.rgb.shape}"
            assert photo.rgb.std() > 10, f"{name}: flat image"
        else:
            with pytest.raises(BadInput) as err:
                load_photo(path, max_pixels=40_000_000)
            assert err.value.reason == reason, (name, err.value)


def test_exif_rotation_is_applied(tmp_path, dreambench):
    make_bad_folder(tmp_path, dreambench)
    ref = np.asarray(Image.open(dreambench / "teapot" / "00.jpg").convert("RGB")).astype(float)
    got = load_photo(tmp_path / "teapot" / "exif_rotated.jpg", 40_000_000).rgb.astype(float)
    assert np.abs(got - ref).mean() < 8  # JPEG re-encoding noise only, not a rotated picture


def test_16_bit_is_scaled_not_clipped(tmp_path, dreambench):
    make_bad_folder(tmp_path, dreambench)
    photo = load_photo(tmp_path / "teapot" / "grey16.png", 40_000_000)
    grey = np.asarray(Image.open(dreambench / "teapot" / "00.jpg").convert("L")).astype(float)
    assert np.abs(photo.rgb[..., 0] - grey).max() <= 1


def test_palette_transparency_becomes_alpha(tmp_path, dreambench):
    make_bad_folder(tmp_path, dreambench)
    photo = load_photo(tmp_path / "teapot" / "palette.png", 40_000_000)
    assert photo.alpha is not None and photo.alpha.min() == 0


def test_bomb_rejected_from_header_and_small_rejected(tmp_path):
    p = tmp_path / "b.png"
    p.write_bytes(png_header_only(9000, 9000))
    with pytest.raises(BadInput, match="generate.max_pixels"):
        load_photo(p, max_pixels=1_000_000)
    Image.new("RGB", (20, 20)).save(tmp_path / "s.png")
    with pytest.raises(BadInput) as err:
        load_photo(tmp_path / "s.png", 1_000_000, min_side=64)
    assert err.value.reason == "too_small"


def test_work_size_shrinks(dreambench):
    photo = load_photo(dreambench / "dog" / "00.jpg", 40_000_000, work_size=64)
    assert min(photo.rgb.shape[:2]) <= 128
