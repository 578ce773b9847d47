"""Procedural 3D subjects: determinism, render contract, real 3D pose change, occlusion, textures."""

import json

import numpy as np
import pytest

from spotdiff.generate.sources.procedural import (
    ARCHETYPES, BACK_MARKER_COLOR, MARKER_COLOR, PALETTE, Primitive, ProceduralSubject, make_subject, render,
)

RNG_SEEDS = range(20)


def part(kind, center, size, color, rotation=(0.0, 0.0, 0.0), texture="plain", color2=(255, 255, 255),
         scale=2.0, shininess=0.0) -> Primitive:
    return Primitive(kind, center, size, rotation, color, color2, texture, scale, shininess)


def subject(*parts: Primitive) -> ProceduralSubject:
    return ProceduralSubject(0, "test", "red", tuple(parts))


def centre_colour(rgb: np.ndarray, x: float = 0.5, y: float = 0.5) -> np.ndarray:
    """Mean colour of a 3x3 patch at fractional canvas position (x right, y down)."""
    h, w = rgb.shape[:2]
    r, c = int(y * h), int(x * w)
    return rgb[r - 1:r + 2, c - 1:c + 2].reshape(-1, 3).mean(axis=0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def dihedral(mask: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations by multiples of 90 degrees and flips of a square mask."""
    return [np.rot90(m, k) for m in (mask, np.fliplr(mask)) for k in range(4)]


def test_same_seed_same_subject_and_pixels():
    a, b = make_subject(123), make_subject(123)
    assert a == b
    rgb_a, alpha_a = render(a, (30, 10, 5), 48)
    rgb_b, alpha_b = render(b, (30, 10, 5), 48)
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(alpha_a, alpha_b)


def test_different_seeds_give_different_subjects():
    subjects = [make_subject(s) for s in RNG_SEEDS]
    assert len({s.primitives for s in subjects}) == len(subjects)


def test_archetypes_and_colour_names():
    subjects = [make_subject(s) for s in range(300)]
    classes = {s.class_name for s in subjects}
    assert len(ARCHETYPES) >= 8 and classes == set(ARCHETYPES)
    assert all(s.color_name in PALETTE for s in subjects)


def test_to_json_is_serialisable_and_descriptive():
    s = make_subject(5)
    d = json.loads(json.dumps(s.to_json()))
    assert d["seed"] == 5 and d["class_name"] == s.class_name and d["color_name"] == s.color_name
    assert d["num_primitives"] == len(s.primitives) == sum(d["primitive_kinds"].values())


def test_bad_primitive_is_rejected():
    with pytest.raises(ValueError):
        part("torus", (0, 0, 0), (1, 1, 1), (255, 0, 0))
    with pytest.raises(ValueError):
        part("box", (0, 0, 0), (1, 1, 1), (255, 0, 0), texture="marble")


@pytest.mark.parametrize("supersample", [1, 2, 3])
def test_output_shapes_dtypes_and_ranges(supersample):
    rgb, alpha = render(make_subject(3), (20, -10, 0), 40, supersample=supersample)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    assert alpha.shape == (40, 40) and alpha.dtype == np.float32
    assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.max() == 1
    assert (rgb[alpha == 0] == 0).all()
    if supersample > 1:
        assert ((alpha > 0) & (alpha < 1)).sum() > 10, "edges should carry fractional coverage"


def test_edges_carry_no_black_fringe():
    # A single white sphere: every covered pixel, edge ones included, is the sphere's own (lit) colour.
    rgb, alpha = render(subject(part("ellipsoid", (0, 0, 0), (1, 1, 1), (255, 255, 255))), (0, 0, 0), 48)
    edge = (alpha > 0) & (alpha < 1)
    assert edge.any() and rgb[edge].min() > 80


def test_subject_stays_inside_canvas_in_random_poses():
    rng = np.random.default_rng(0)
    size = 48
    yy, xx = np.mgrid[:size, :size] + 0.5
    radius = np.hypot(xx - size / 2, yy - size / 2)
    for seed in range(12):
        pose = (rng.uniform(0, 360), rng.uniform(-90, 90), rng.uniform(-180, 180))
        _, alpha = render(make_subject(seed), pose, size)
        border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
        assert (border == 0).all(), (seed, pose)
        assert (alpha[radius > 0.47 * size + 1] == 0).all(), (seed, pose)
        assert ((alpha > 0) & (alpha < 1)).any(), (seed, pose)


def test_yaw_changes_the_view_beyond_any_2d_transform():
    size, novel = 64, 0
    for seed in RNG_SEEDS:
        s = make_subject(seed)
        front = render(s, (0, 0, 0), size)[1] > 0.5
        side = render(s, (90, 0, 0), size)[1] > 0.5
        novel += max(iou(side, m) for m in dihedral(front)) < 0.95
    assert novel >= 0.8 * len(RNG_SEEDS), f"only {novel} of {len(RNG_SEEDS)} subjects look new at yaw 90"


def test_back_view_is_not_a_mirrored_front_view():
    # Orthographic yaw 180 mirrors the silhouette exactly, but a real render shows the other side.
    for seed in range(6):
        s = make_subject(seed)
        rgb0, a0 = render(s, (0, 0, 0), 64)
        rgb1, a1 = render(s, (180, 0, 0), 64)
        both = (a1 > 0.99) & (np.fliplr(a0) > 0.99)
        diff = np.abs(rgb1.astype(int) - np.fliplr(rgb0).astype(int))[both].mean()
        assert diff > 5, (seed, s.class_name, diff)


def test_box_and_cylinder_silhouettes_have_exact_size():
    size = 96
    cube = subject(part("box", (0, 0, 0), (1, 1, 1), (200, 200, 200)))
    side_px = 2 * 0.47 * size / (np.sqrt(3) * 1.01)  # half-diagonal is the bounding radius (+1 % margin)
    assert abs(render(cube, (0, 0, 0), size)[1].sum() / side_px ** 2 - 1) < 0.03
    # Same scale in every pose: turned 45 degrees the cube shows two faces, sqrt(2) times as wide.
    assert abs(render(cube, (45, 0, 0), size)[1].sum() / (np.sqrt(2) * side_px ** 2) - 1) < 0.03
    assert abs(render(cube, (90, 0, 90), size)[1].sum() / side_px ** 2 - 1) < 0.03
    can = subject(part("cylinder", (0, 0, 0), (1, 1, 0.5), (200, 200, 200)))
    r_px = 0.47 * size / (np.hypot(1, 0.5) * 1.01)
    assert abs(render(can, (0, 0, 0), size)[1].sum() / (np.pi * r_px ** 2) - 1) < 0.03  # looking down the axis
    assert abs(render(can, (0, 90, 0), size)[1].sum() / (2 * r_px * r_px) - 1) < 0.03  # side on: 2r x 2h


def test_front_part_hides_the_part_behind_it():
    red, blue = (220, 20, 20), (20, 20, 220)
    s = subject(part("ellipsoid", (0, 0, 1), (0.6, 0.6, 0.6), red),
                part("ellipsoid", (0, 0, -1), (0.6, 0.6, 0.6), blue))
    front = centre_colour(render(s, (0, 0, 0), 64)[0])
    assert front[0] > 2 * front[2], front
    back = centre_colour(render(s, (180, 0, 0), 64)[0])
    assert back[2] > 2 * back[0], back
    # Side on, both show: positive yaw turns the front (red, +z) to the viewer's right.
    rgb = render(s, (90, 0, 0), 64)[0]
    right, left = centre_colour(rgb, 0.75), centre_colour(rgb, 0.25)
    assert right[0] > 2 * right[2] and left[2] > 2 * left[0], (left, right)


def test_texture_turns_with_the_object():
    chequered = part("ellipsoid", (0, 0, 0), (1, 1, 1), (230, 30, 30), texture="checker", color2=(30, 30, 230),
                     scale=1.5)
    plain = part("ellipsoid", (0, 0, 0), (1, 1, 1), (230, 30, 30))
    rgb0, a0 = render(subject(chequered), (0, 0, 0), 64)
    rgb40, a40 = render(subject(chequered), (40, 0, 0), 64)
    # A sphere's outline and shading do not change with yaw, so any change is the texture moving.
    assert np.abs(a0 - a40).sum() < 1  # at most a few edge rays round the other way
    assert np.array_equal(render(subject(plain), (0, 0, 0), 64)[0], render(subject(plain), (40, 0, 0), 64)[0])
    assert np.abs(rgb0.astype(int) - rgb40.astype(int)).mean() > 10
    # Turning the subject by yaw 40 looks the same as turning the part itself by 40 degrees about y.
    turned = part("ellipsoid", (0, 0, 0), (1, 1, 1), (230, 30, 30), rotation=(0, 40, 0), texture="checker",
                  color2=(30, 30, 230), scale=1.5)
    rgb_t, a_t = render(subject(turned), (0, 0, 0), 64)
    assert np.abs(a_t - a40).sum() < 1
    assert (np.abs(rgb_t.astype(int) - rgb40.astype(int)) > 2).mean() < 0.01


def test_light_direction_is_fixed_in_view_space():
    # The lit side of a plain sphere is where the light comes from, whatever the pose.
    s = subject(part("ellipsoid", (0, 0, 0), (1, 1, 1), (200, 200, 200)))
    for light, bright, dark in [((1, 0, 0.3), 0.75, 0.25), ((-1, 0, 0.3), 0.25, 0.75)]:
        rgb = render(s, (70, 20, 0), 64, light=light)[0]
        assert centre_colour(rgb, bright).mean() > centre_colour(rgb, dark).mean() + 40


def marker_pixels(rgb: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int] = MARKER_COLOR) -> np.ndarray:
    """Mask of pixels showing a marker of ``colour`` (saturated magenta or cyan: its two strong channels
    high, the weak one low, whatever the shading)."""
    c = rgb.astype(int)
    strong = [k for k in range(3) if colour[k] > 128]
    weak = [k for k in range(3) if colour[k] <= 128][0]
    lo = np.minimum(c[..., strong[0]], c[..., strong[1]])
    return (alpha > 0.5) & (lo > 120) & (c[..., weak] < 0.5 * lo)


def test_markers_make_yaw_visible_across_identities():
    # With markers on, every subject carries the same magenta ball on its front (+z) and cyan ball on its
    # back, so where they show tells the yaw whatever the archetype: magenta in the middle facing the viewer, cyan from
    # the back; at yaw +90 (positive yaw turns the front to the viewer's right) magenta right of the
    # middle and cyan left of it, the reverse at -90.
    size = 96
    for seed in range(12):
        s = make_subject(seed, markers=True)
        assert make_subject(seed).primitives == s.primitives[:-4], seed
        assert {p.color for p in s.primitives[-4:]} == {MARKER_COLOR, BACK_MARKER_COLOR}, seed
        seen = {}
        for yaw in (0, 90, -90, 180):
            rgb, alpha = render(s, (yaw, 0, 0), size)
            for name, colour in (("front", MARKER_COLOR), ("back", BACK_MARKER_COLOR)):
                m = marker_pixels(rgb, alpha, colour)
                seen[yaw, name] = (int(m.sum()), np.nonzero(m)[1].mean() / size if m.any() else None)
        middle = np.nonzero(render(s, (0, 0, 0), size)[1] > 0.5)[1].mean() / size
        info = (seed, s.class_name, seen)
        assert seen[0, "front"][0] > 40 and abs(seen[0, "front"][1] - middle) < 0.1, info
        assert seen[180, "back"][0] > 40 and abs(seen[180, "back"][1] - (1 - middle)) < 0.1, info
        assert seen[0, "back"][0] < 0.5 * seen[0, "front"][0] and seen[180, "front"][0] < 0.5 * seen[180, "back"][0], info
        assert seen[90, "front"][1] > 0.6 and seen[90, "back"][1] < 0.4, info
        assert seen[-90, "front"][1] < 0.4 and seen[-90, "back"][1] > 0.6, info


def test_no_palette_colour_is_close_to_a_marker():
    # The markers must not pass for a subject's own colour (teal shares cyan's hue but is far darker).
    for name, rgb in PALETTE.items():
        for colour in (MARKER_COLOR, BACK_MARKER_COLOR):
            assert np.linalg.norm(np.subtract(rgb, colour)) > 100, (name, colour)


def test_markers_are_a_param_recorded_per_group_and_in_the_card(tmp_path):
    """generate.procedural.markers (default off) paints the markers, records it in every procedural
    group's JSON, and the dataset card states it as a limitation; off, no marker colour is rendered."""
    from spotdiff.common.record import decode_members
    from spotdiff.config import parse_params
    from spotdiff.generate.run import generate
    from spotdiff.publish.card import limitations
    from spotdiff.shard.run import iter_generated

    seen = {}
    for markers in (False, True):
        p = parse_params({"generate": {"n_groups": 6, "image_size": 96, "workers": 1, "sources": {"procedural": 1},
                                       "procedural": {"markers": markers}}})
        out = tmp_path / str(markers)
        generate(p.generate, out, progress=False)
        groups = [decode_members(m) for _, m in iter_generated(out)]
        records = [json.loads(m["json"]) for _, m in iter_generated(out)]
        assert len(records) == 6 and all(r["orientation_markers"] is markers for r in records)
        pixels = sum(int(marker_pixels(g.views[v].image, g.views[v].mask / 255.0).sum()) for g in groups for v in g.views)
        seen[markers] = pixels
        stated = [x for x in limitations(records, {}, {"procedural": 6}, []) if "orientation markers" in x]
        assert bool(stated) is markers
    assert seen[False] == 0 < seen[True]
