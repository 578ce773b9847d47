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


def test_a_photo_the_decoder_warns_about_is_corrupt_with_the_warning(tmp_path, dreambench):
    """Issue 15: Pillow accepts a JPEG with one flipped bit in its entropy-coded data (libjpeg only warns) and
    a PNG with a wrong pixel-data checksum; both are rejected as corrupt, with the decoder's words."""
    make_bad_folder(tmp_path, dreambench)
    for name, said in (("bitflip.jpg", "decoder warning: Corrupt JPEG data"),
                       ("bad_crc.png", "decoder warning: libpng error: IDAT: CRC error")):
        path = tmp_path / "teapot" / name
        Image.open(path).load()  # what made them dangerous: Pillow alone decodes them
        with pytest.raises(BadInput) as err:
            load_photo(path, max_pixels=40_000_000, work_size=64)
        assert err.value.reason == "corrupt" and err.value.detail.startswith(said), err.value.detail


def test_evaluate_real_photos_skip_a_bad_file_with_its_name_and_reason(tmp_path, dreambench):
    """Issue 15 (item 6): a corrupt photo in evaluate's real-photo folder is a row of ``skipped`` naming the
    file and why (the decoder's warning), not a stage failure; the other photos are still used."""
    import shutil
    from types import SimpleNamespace

    from spotdiff.evaluate.run import _photo_features

    for subject in ("dog", "teapot"):
        shutil.copytree(dreambench / subject, tmp_path / subject)
    data = bytearray((tmp_path / "teapot" / "00.jpg").read_bytes())
    data[len(data) // 2 + 1] ^= 1  # the one flipped bit of helpers.make_bad_folder's bitflip.jpg
    (tmp_path / "teapot" / "00.jpg").write_bytes(bytes(data))
    (tmp_path / "dog" / "notes.png").write_text("not a picture")
    seen = []
    encoder = SimpleNamespace(image_size=32, features=lambda images: seen.extend(images) or np.zeros((len(images), 4)))
    real = _photo_features(tmp_path, encoder)
    n = len(list(tmp_path.glob("*/*.jpg")))
    assert len(seen) == len(real["labels"]) == n - 1
    assert set(real["skipped"]) == {"teapot/00.jpg", "dog/notes.png"}
    assert real["skipped"]["teapot/00.jpg"].startswith("corrupt: decoder warning: Corrupt JPEG data")
    assert real["skipped"]["dog/notes.png"].startswith("not_an_image: ")
