"""Pose landmarks of people: MediaPipe on a real photo, and points that follow the pixels exactly."""

import json

import numpy as np
import pytest
import skimage.data

from spotdiff.generate import segment
from spotdiff.generate.background.composite import composite, cut_layer, resize_layer
from spotdiff.config import ConfigError, parse_params
from spotdiff.common.contact_sheet import HEADER_H, LABEL_W, THUMB, render_rows
from spotdiff.generate.run import GroupBuilder, plan
from spotdiff.common.images import Photo
from spotdiff.generate.pose import affine, landmarks
from spotdiff.common.record import VIEWS, VISIBLE

NOSE, L_SHOULDER, R_SHOULDER = 0, 11, 12
UPPER_BODY = range(13)  # face and shoulders: in view in the astronaut photo


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[:, :, :3])


@pytest.fixture(scope="module")
def astronaut_group():
    cfg = parse_params({"generate": {"sources": {"packaged": 1}, "n_groups": 1, "image_size": 128}}).generate
    (job,) = plan(cfg)
    assert job.item == "astronaut"
    return GroupBuilder(cfg)(job)


def test_pose_model_finds_the_astronaut(astronaut):
    found = landmarks.detect(astronaut)
    assert found is not None and len(found) == landmarks.N_LANDMARKS
    pts = np.array(found)
    assert (pts[list(UPPER_BODY), 2] > VISIBLE).sum() >= 11
    nx, ny, _ = pts[NOSE]
    assert 170 < nx < 280 and 70 < ny < 190, "nose inside the face"
    for s in (L_SHOULDER, R_SHOULDER):
        assert pts[s, 1] > ny + 50, "shoulders below the nose"
    assert abs(pts[L_SHOULDER, 0] - pts[R_SHOULDER, 0]) > 100, "shoulders a body width apart"


def test_no_person_no_landmarks():
    assert landmarks.detect(np.full((128, 128, 3), 127, np.uint8)) is None


def test_selfie_mask_covers_the_astronaut(astronaut):
    seg = segment.get("mediapipe")(Photo(astronaut, None, (512, 512), None), "astronaut")
    assert seg.mask[260:400, 140:290].mean() > 0.8, "torso"
    assert seg.mask[:64, -64:].mean() < 0.05, "top-right corner is background"


def test_transform_points_identity_and_by_hand():
    pts = np.array([[1.5, -2.0, 0.9], [10.0, 20.0, 0.1]])
    assert np.array_equal(affine.transform_points(pts, np.eye(3)), pts)
    scale_shift = np.array([[2.0, 0, 3], [0, 2.0, -1], [0, 0, 1]])
    assert np.allclose(affine.transform_points(pts, scale_shift), [[6.0, -5.0, 0.9], [23.0, 39.0, 0.1]])
    # Perspective: w = 0.5 * x + 1, so (2, 4) -> (2, 4) / 2.
    persp = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.5, 0, 1]])
    assert np.allclose(affine.transform_points([[2.0, 4.0]], persp), [[1.0, 2.0]])


def _blob(shape: tuple[int, int], x: float, y: float, sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def _centroid(weight: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[:weight.shape[0], :weight.shape[1]]
    return np.array([(xx * weight).sum(), (yy * weight).sum()]) / weight.sum()


def test_points_follow_the_pixels_through_every_step():
    """A bright dot's centre and a point placed on it stay together through crop, warp, resize, paste."""
    h, w = 90, 120
    dot = (47.3, 38.6)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.round(_blob((h, w), *dot) * 255).astype(np.uint8)
    mask = np.zeros((h, w), np.float32)
    mask[10:80, 15:100] = 1.0
    layer = cut_layer(rgb, mask, pad=0.0, points=np.array([[*dot, 0.7]]))
    assert layer.offset == (15, 10)
    assert np.allclose(layer.points[0], [dot[0] - 15, dot[1] - 10, 0.7])
    assert np.allclose(_centroid(layer.rgb[..., 0]), layer.points[0, :2], atol=0.05)

    params = {"flip": True, "rotation": 17.0, "scale": 1.0,
              "perspective": [0.03, -0.02, 0.0, 0.04, -0.05, 0.0, 0.02, 0.01]}
    warped, matrix = affine.apply(layer, params)
    assert np.allclose(warped.points, affine.transform_points(layer.points, matrix))
    inside = warped.alpha > 0.99  # away from the warped layer's soft border
    assert np.allclose(_centroid(warped.rgb[..., 0] * inside), warped.points[0, :2], atol=0.1)

    for factor in (0.37, 1.9):
        small = resize_layer(warped, factor)
        assert np.allclose(_centroid(small.rgb[..., 0] * (small.alpha > 0.99)), small.points[0, :2], atol=0.15)
        assert small.points[0, 2] == 0.7, "visibility is not geometry"

    canvas = np.zeros((200, 200, 3), np.uint8)
    out, _, placed = composite(canvas, warped, (81.7, 120.2))
    assert np.allclose(_centroid(out[..., 0].astype(np.float64)), placed[0, :2], atol=0.1)


def test_group_records_landmarks_that_match_the_views(astronaut_group):
    meta = astronaut_group.meta
    assert set(meta["landmarks"]) == set(VIEWS)
    for view in VIEWS:
        pts = meta["landmarks"][view]
        assert len(pts) == landmarks.N_LANDMARKS and all(len(p) == 3 for p in pts)
        assert all(round(x, 1) == x and round(y, 1) == y and round(v, 3) == v for x, y, v in pts)
    assert meta["landmarks"]["anchor"] == meta["landmarks"]["bg"], "bg keeps pose and placement"
    assert json.loads(json.dumps(meta))["landmarks"] == meta["landmarks"]
    # Re-detecting on the generated pose view lands where the recorded (transformed) points are;
    # what is left is the model's own jitter on a 128 px image, not geometry.
    recorded = np.array(meta["landmarks"]["pose"])
    again = np.array(landmarks.detect(astronaut_group.views["pose"].image))
    both = [i for i in UPPER_BODY if recorded[i, 2] > 0.8 and again[i, 2] > 0.8]
    assert len(both) >= 9
    err = np.linalg.norm(recorded[both, :2] - again[both, :2], axis=1)
    assert np.median(err) < 2.0 and err.max() < 6.0, err.round(1)


def test_contact_sheet_draws_landmarks(astronaut_group):
    members = astronaut_group.encode(90)
    with_points = np.asarray(render_rows([("a", members)]))
    bare = dict(members, json=json.dumps({k: v for k, v in astronaut_group.meta.items() if k != "landmarks"}).encode())
    without = np.asarray(render_rows([("a", bare)]))
    changed = np.abs(with_points.astype(int) - without.astype(int)).sum(axis=2) > 0
    for c in range(len(VIEWS)):
        assert changed[HEADER_H:, LABEL_W + c * THUMB:LABEL_W + (c + 1) * THUMB].sum() > 50, VIEWS[c]
    assert not changed[:, LABEL_W + len(VIEWS) * THUMB:].any(), "masks are left clean"


def test_no_landmarks_for_non_people_or_when_switched_off():
    cfg = parse_params({"generate": {"sources": {"procedural": 1}, "n_groups": 1, "image_size": 64}}).generate
    assert "landmarks" not in GroupBuilder(cfg)(plan(cfg)[0]).meta
    cfg = parse_params({"generate": {"sources": {"packaged": 1}, "n_groups": 1, "image_size": 64,
                                     "pose": {"landmarks": False}}}).generate
    assert "landmarks" not in GroupBuilder(cfg)(plan(cfg)[0]).meta


@pytest.mark.parametrize("content", [None, b"not a model"])
def test_bad_landmarks_model_is_a_config_error(tmp_path, content):
    """Checked when the builder starts (not once per photo): missing and unloadable assets."""
    path = tmp_path / "pose.task"
    if content is not None:
        path.write_bytes(content)
    cfg = parse_params({"generate": {"pose": {"landmarks_model": str(path)}}}).generate
    with pytest.raises(ConfigError) as err:
        GroupBuilder(cfg)
    assert str(path) in str(err.value) and "generate.pose.landmarks_model" in str(err.value)
