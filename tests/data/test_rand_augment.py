"""RandAugment with timm's semantics: each op against PIL, policies, seeds, label maps."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import (
    rand_augment,
    rand_augment_colour,
    rand_augment_fast_geometry,
    rand_augment_geometry,
    rand_augment_levels,
    rand_augment_ops,
    rand_augment_policy,
)
from keras_spvit.data.rand_augment import (
    RAND_INCREASING_TRANSFORMS,
    RandAugment,
    apply_op,
    level_to_arg,
)

# Pure TensorFlow code (it runs inside tf.data whatever the Keras backend), so
# the results cannot depend on KERAS_BACKEND: the whole file runs on TensorFlow,
# and tests/data/test_train_augment.py runs it through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow; "
    "test_train_augment.py covers every backend",
)

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from tests.data.test_rand_augment_ops import FILL, _image, _ours, _pil  # noqa: E402

# === Draws, seeds, tf.data ===


def _samples(augment, count):
    seeds = tf.data.Dataset.range(count).map(lambda i: tf.stack([tf.constant(5, tf.int64), i]))
    draws = seeds.map(lambda seed: augment.sample(seed)).batch(count)
    return [t.numpy() for t in next(iter(draws))]


def test_draws_follow_timm_distributions():
    ops, applied, magnitudes, negate, bicubic = _samples(RandAugment("rand-m9-mstd0.5"), 3000)
    assert ops.shape == (3000, 2)
    counts = np.bincount(ops.ravel(), minlength=15)
    assert len(counts) == 15 and counts.min() > 300  # uniform with replacement: 400 each
    assert abs(applied.mean() - 0.5) < 0.03 and abs(negate.mean() - 0.5) < 0.03
    assert bicubic.all()
    # gauss(9, 0.5) clipped to [0, 10].
    assert magnitudes.max() == 10.0 and 0.0 <= magnitudes.min()
    unclipped = magnitudes[magnitudes < 10.0]
    assert abs(np.median(magnitudes) - 9.0) < 0.05 and abs(unclipped.std() - 0.45) < 0.05
    assert abs((magnitudes == 10.0).mean() - 0.0228) < 0.01  # P(N(9, .5) > 10)

    _, _, magnitudes, _, _ = _samples(RandAugment("rand-m8-mstd101"), 2000)
    assert magnitudes.min() >= 0.0 and magnitudes.max() <= 8.0
    assert abs(magnitudes.mean() - 4.0) < 0.2
    _, _, magnitudes, _, _ = _samples(RandAugment("rand-m7"), 50)
    assert (magnitudes == 7.0).all()
    _, _, _, _, bicubic = _samples(RandAugment(interpolation="random"), 2000)
    assert abs(bicubic.mean() - 0.5) < 0.05


def _batch_images(count, size=48):
    return tf.constant(np.random.default_rng(1).random((count, size, size, 3)), tf.float32)


@pytest.mark.parametrize("exact", [True, False])
def test_same_seed_same_output_and_seeds_differ(exact):
    augment = RandAugment("rand-m9-mstd0.5-n3", exact=exact)
    image = _batch_images(1)[0]
    first = augment(image, seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(first, augment(image, seed=tf.constant([3, 4])))
    np.testing.assert_array_equal(augment(image, seed=11), augment(image, seed=[11, 0]))
    outputs = [augment(image, seed=[3, s]).numpy() for s in range(6)]
    assert len({o.tobytes() for o in outputs}) >= 4
    # Output: float32 [0, 1], same shape, on the uint8 grid.
    assert first.dtype == tf.float32 and first.shape == image.shape
    values = first.numpy() * 255.0
    assert values.min() >= 0.0 and values.max() <= 255.0
    np.testing.assert_allclose(values, np.round(values), atol=1e-3)


@pytest.mark.parametrize("exact", [True, False])
def test_tf_data_parallel_map_matches_eager(exact):
    # One op per image keeps the traced graph (and the test) small; the
    # chaining of ops is the same Python loop eagerly and in the graph.
    augment = RandAugment("rand-n1-m9-mstd0.5-p0.9", exact=exact)
    images = _batch_images(8)
    label_maps = tf.constant(np.random.default_rng(2).integers(0, 9, (8, 6, 6)), tf.int32)
    seeds = tf.stack([tf.fill((8,), tf.constant(7, tf.int64)), tf.range(8, dtype=tf.int64)], 1)
    ds = tf.data.Dataset.from_tensor_slices((images, label_maps, seeds))
    ds = ds.map(lambda x, m, s: augment(x, s, label_map=m), num_parallel_calls=tf.data.AUTOTUNE)
    for i, (image, label_map) in enumerate(ds):
        eager_image, eager_map = augment(images[i], seeds[i], label_map=label_maps[i])
        np.testing.assert_array_equal(image, eager_image)
        np.testing.assert_array_equal(label_map, eager_map)


def test_random_interpolation_picks_bilinear_or_bicubic_per_op():
    image = _batch_images(1)[0]
    policy = "rand-n1-m9-p1.0-mstd0.5"
    kinds = set()
    for s in range(30):
        augment = RandAugment(policy, interpolation="random", exact=True)
        ops, _, _, _, bicubic = augment.sample(s)
        if augment.transforms[int(ops[0])] not in rand_augment.GEOMETRIC_OPS:
            continue
        kind = "bicubic" if bool(bicubic[0]) else "bilinear"
        expected = RandAugment(policy, interpolation=kind, exact=True)(image, s)
        np.testing.assert_array_equal(augment(image, s), expected)
        kinds.add(kind)
    assert kinds == {"bilinear", "bicubic"}


@pytest.mark.parametrize("module", [
    rand_augment, rand_augment_colour, rand_augment_fast_geometry, rand_augment_geometry,
    rand_augment_levels, rand_augment_ops, rand_augment_policy,
])
def test_modules_are_pure_tensorflow(module):
    # It runs in tf.data whatever the Keras backend: no Keras in the modules.
    assert "keras" not in vars(module)
    source = open(module.__file__).read()
    assert "import keras" not in source and "from keras " not in source


# === Label maps ride along ===


COLOURS = np.random.default_rng(5).integers(0, 256, (256, 3)).astype(np.uint8)


def _blocks(cells, cell):
    """A map of class ids and an image painting each cell in its class's colour."""
    rng = np.random.default_rng(3)
    label_map = rng.integers(1, 200, (cells, cells)).astype(np.uint8)
    return label_map, COLOURS[np.repeat(np.repeat(label_map, cell, 0), cell, 1)]


@pytest.mark.parametrize("exact", [True, False])
def test_translate_by_whole_cells_moves_the_map_exactly(exact):
    label_map, image = _blocks(8, 7)
    one_hot = np.eye(8, dtype=np.float32)[np.arange(64).reshape(8, 8) % 8]  # (8, 8, 8)
    # +2/8 of the width: content moves 2 cells (14 px) to the left, as PIL.
    out_image, out_map = apply_op(
        "TranslateXRel", image, 0.25, label_map=label_map, exact=exact
    )
    np.testing.assert_array_equal(out_map[:, :6], label_map[:, 2:])
    assert (out_map.numpy()[:, 6:] == 0).all()
    np.testing.assert_array_equal(out_image.numpy()[:, :42], image[:, 14:])
    _, out_hot = apply_op("TranslateYRel", image, -0.375, label_map=one_hot, exact=exact)
    assert out_hot.dtype == tf.float32 and out_hot.shape == (8, 8, 8)
    np.testing.assert_array_equal(out_hot[3:], one_hot[:5])
    assert (out_hot.numpy()[:3] == 0).all()


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("degrees, turns", [(90.0, 1), (180.0, 2), (-90.0, 3)])
def test_quarter_rotations_match_rot90_for_image_and_map(degrees, turns, exact):
    label_map, image = _blocks(6, 5)
    out_image, out_map = apply_op("Rotate", image, degrees, label_map=label_map, exact=exact)
    np.testing.assert_array_equal(out_map, np.rot90(label_map, turns))
    np.testing.assert_array_equal(out_image, np.rot90(image, turns))


@pytest.mark.parametrize(
    "name, arg",
    [
        ("Rotate", 23.0),
        ("Rotate", -30.0),
        ("ShearX", 0.3),
        ("ShearY", -0.21),
        ("TranslateXRel", 0.17),
    ],
)
@pytest.mark.parametrize("exact", [True, False])
def test_geometric_ops_warp_the_map_like_pil_nearest_on_its_grid(name, arg, exact):
    # Independent reference: PIL's own NEAREST transform of the map (fill 0)
    # with the image's transform rescaled to the map grid (square here).
    label_map, image = _blocks(8, 7)
    _, out_map = apply_op(name, image, arg, label_map=label_map, exact=exact)
    pil_map = _pil(label_map)
    if name == "Rotate":
        expected = pil_map.rotate(arg, resample=Image.NEAREST, fillcolor=0)
    else:
        matrix = {
            "ShearX": (1, arg, 0, 0, 1, 0),
            "ShearY": (1, 0, 0, arg, 1, 0),
            "TranslateXRel": (1, 0, arg * 8, 0, 1, 0),
        }[name]
        expected = pil_map.transform((8, 8), Image.AFFINE, matrix, Image.NEAREST, fillcolor=0)
    np.testing.assert_array_equal(out_map, np.asarray(expected))


@pytest.mark.parametrize("exact", [True, False])
def test_map_follows_image_content_on_a_finer_image_grid(exact):
    # The image's cell centres (7 px cells: the centre is a pixel centre) sample
    # the same scaled source point as the map's cell centres, so wherever the
    # image pixel kept a cell's exact colour, the map holds that cell's class.
    label_map, image = _blocks(8, 7)
    out_image, out_map = apply_op(
        "Rotate", image, 17.0, label_map=label_map, interpolation="bilinear", exact=exact
    )
    centres = out_image.numpy()[3::7, 3::7].astype(np.uint8)  # (8, 8, 3)
    out_map = out_map.numpy()
    # A blend of two colours matching a third class's random colour exactly
    # in all channels is (practically) impossible.
    matches = (centres[:, :, None, :] == COLOURS[None, None, 1:200]).all(-1)  # (8, 8, 199)
    pure = matches.any(-1) & (out_map > 0)
    assert pure.sum() >= 20
    np.testing.assert_array_equal(matches.argmax(-1)[pure] + 1, out_map[pure])


def test_colour_ops_leave_the_map_alone_and_dtypes_survive():
    image = _image(16, 16)
    for label_map in (
        tf.constant(np.arange(16).reshape(4, 4), tf.int32),
        tf.constant(np.random.default_rng(0).random((4, 4, 5)), tf.float32),
        tf.constant(np.arange(16).reshape(4, 4) % 2 == 0),
        tf.constant(np.arange(48).reshape(4, 4, 3), tf.uint8),
    ):
        for name in ("Equalize", "Color", "Solarize"):
            _, out = apply_op(name, image, 1.3, label_map=label_map)
            assert out.dtype == label_map.dtype
            np.testing.assert_array_equal(out, label_map)
        _, out = apply_op("ShearX", image, 0.2, label_map=label_map)
        assert out.dtype == label_map.dtype and out.shape == label_map.shape


def test_rand_augment_moves_the_map_only_with_geometric_ops():
    augment = RandAugment("rand-m9-mstd0.5-n2")
    image = _batch_images(1)[0]
    label_map = tf.constant(np.random.default_rng(4).integers(1, 9, (6, 6, 1)), tf.int64)
    geometric = {augment.transforms.index(n) for n in rand_augment.GEOMETRIC_OPS}
    seen = set()
    for s in range(16):
        seed = tf.constant([9, s])
        ops, applied, *_ = augment.sample(seed)
        ran = {int(o) for o, a in zip(ops.numpy(), applied.numpy()) if a}
        out_image, out_map = augment(image, seed, label_map=label_map)
        # The image never depends on the map.
        np.testing.assert_array_equal(out_image, augment(image, seed))
        moved = not np.array_equal(out_map, label_map)
        if not ran & geometric:
            assert not moved
        seen.add(bool(ran & geometric))
    assert seen == {True, False}


# === Arguments ===


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fill"):
        RandAugment(fill=(1, 2))
    with pytest.raises(ValueError, match="interpolation"):
        RandAugment(interpolation="lanczos")
    with pytest.raises(ValueError, match="translate_pct"):
        RandAugment(translate_pct=1.5)
    with pytest.raises(ValueError, match="name"):
        apply_op("Cutout", _image(), 1.0)
    with pytest.raises(ValueError, match="interpolation"):
        apply_op("Rotate", _image(), 1.0, interpolation="random")
    with pytest.raises(ValueError, match="image.shape"):
        RandAugment()(tf.zeros((2, 8, 8, 3)), seed=0)
    with pytest.raises(ValueError, match="exact"):
        RandAugment(exact="yes")
    with pytest.raises(ValueError, match="interpolation"):
        RandAugment(interpolation="nearest", exact=True)
    with pytest.raises(ValueError, match="interpolation"):
        apply_op("Rotate", _image(), 1.0, interpolation="nearest", exact=True)
    with pytest.raises(ValueError, match="label_map.shape"):
        apply_op("Rotate", _image(), 1.0, label_map=tf.zeros((4,)))


def test_config_round_trip():
    augment = RandAugment(
        "rand-m9-mstd0.5-inc1", exact=True, interpolation="bilinear", fill=0, translate_pct=0.3
    )
    again = RandAugment.from_config(augment.get_config())
    assert again.get_config() == augment.get_config()
    assert again.fill == (0, 0, 0) and again.increasing and "rand-m9" in repr(again)
    assert again.exact


# === Fast mode (default): one ImageProjectiveTransformV3 per geometric op ===


def _pil_matrix(name, arg, height, width):
    # PIL's inverse affine data (Image.rotate rotates about the centre).
    if name == "Rotate":
        angle = -math.radians(arg % 360.0)
        cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
        cx, cy = width / 2.0, height / 2.0
        return (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)
    return {
        "ShearX": (1, arg, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, arg, 1, 0),
        "TranslateXRel": (1, 0, arg * width, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, arg * height),
    }[name]


def _source_index(name, arg, height, width):
    # Source point of each output pixel centre in pixel-index units (pixel i's
    # centre at i): what bilinear interpolation weighs.
    a, b, c, d, e, f = _pil_matrix(name, arg, height, width)
    y, x = np.mgrid[:height, :width] + 0.5
    return a * x + b * y + c - 0.5, d * x + e * y + f - 0.5


FAST_CASES = [
    ("Rotate", -27.3),
    ("Rotate", 13.0),
    ("Rotate", 30.0),
    ("ShearX", -0.3),
    ("ShearX", 0.17),
    ("ShearY", -0.21),
    ("ShearY", 0.3),
    ("TranslateXRel", -0.405),
    ("TranslateXRel", 0.1234),
    ("TranslateYRel", 0.45),
    ("TranslateYRel", -0.2),
]


@pytest.mark.parametrize("shape", [(29, 37), (40, 24)])
def test_fast_geometric_ops_match_exact_bilinear_inside(shape):
    # Same geometry as PIL's: wherever the 2x2 neighbourhood is inside the
    # image, the fast warp equals PIL's bilinear value up to rounding (1 level).
    image = _image(*shape)
    height, width = shape
    identical = interior_total = 0
    for name, arg in FAST_CASES:
        kwargs = dict(fill=FILL, interpolation="bilinear")
        exact = _ours(name, image, arg, exact=True, **kwargs)
        fast = _ours(name, image, arg, exact=False, **kwargs)
        sx, sy = _source_index(name, arg, height, width)
        inside = (sx >= 0) & (sx < width - 1) & (sy >= 0) & (sy < height - 1)
        assert inside.mean() > 0.3, (name, arg)
        diff = np.abs(fast - exact)[inside]
        assert diff.max() <= 1, (name, arg, diff.max())
        identical += (diff == 0).sum()
        interior_total += diff.size
    # Truncated like PIL: almost every interior value is PIL's exactly.
    assert identical / interior_total > 0.95


def test_fast_half_pixel_convention_is_pils():
    # A half-pixel error would shift every interpolated value: a one-pixel
    # translation must copy pixels exactly, a half-pixel one average them.
    image = _image(20, 20)
    out = _ours("TranslateXRel", image, 1 / 20, exact=False)
    np.testing.assert_array_equal(out[:, :19], image[:, 1:])
    out = _ours("TranslateYRel", image, 0.5 / 20, exact=False)
    expected = (image[:-1].astype(np.int64) + image[1:]) // 2
    np.testing.assert_array_equal(out[:19], expected)


@pytest.mark.parametrize("name, arg", FAST_CASES)
def test_fast_fill_is_exact_outside(name, arg):
    image = _image(29, 37)
    fill = (7, 200, 33)
    out = _ours(name, image, arg, exact=False, fill=fill)
    sx, sy = _source_index(name, arg, 29, 37)
    # No neighbour inside: the fill colour exactly.
    outside = (sx <= -1) | (sx >= 37) | (sy <= -1) | (sy >= 29)
    if name != "Rotate" or abs(arg) > 10:
        assert outside.sum() > 10
    assert (out[outside] == fill).all()


def test_fast_nearest_interpolation_copies_source_pixels():
    image = _image(29, 37)
    out = _ours("Rotate", image, 23.0, exact=False, interpolation="nearest")
    colours = {tuple(p) for p in image.reshape(-1, 3)} | {FILL}
    assert {tuple(p) for p in out.reshape(-1, 3)} <= colours


def test_default_is_fast_and_draws_do_not_depend_on_mode():
    assert RandAugment().exact is False
    image = _image(29, 37)
    np.testing.assert_array_equal(
        apply_op("Rotate", image, 13.0).numpy(), _ours("Rotate", image, 13.0, exact=False)
    )
    assert not np.array_equal(
        _ours("Rotate", image, 13.0, exact=False), _ours("Rotate", image, 13.0)
    )
    fast, exact = RandAugment("rand-m9-mstd0.5-inc1"), RandAugment(
        "rand-m9-mstd0.5-inc1", exact=True
    )
    float_image = tf.constant(image / 255.0, tf.float32)
    colour_only = 0
    for s in range(12):
        draws = [d.numpy() for d in fast.sample([4, s])]
        for a, b in zip(draws, exact.sample([4, s])):
            np.testing.assert_array_equal(a, b)
        ops, applied = draws[0], draws[1]
        ran = {fast.transforms[o] for o, a in zip(ops, applied) if a}
        if not ran & set(rand_augment.GEOMETRIC_OPS):
            # Colour operations are exact in both modes: identical images.
            np.testing.assert_array_equal(fast(float_image, [4, s]), exact(float_image, [4, s]))
            colour_only += 1
    assert colour_only >= 3


def test_fast_rand_augment_applies_the_drawn_op_as_apply_op():
    # The fast call dispatches on a shared geometric branch and a table of
    # arguments: it must equal `apply_op` with `level_to_arg` of the draws.
    augment = RandAugment("rand-n1-m9-mstd0.5-p1.0-inc1", fill=FILL)
    image = _image(24, 32)
    float_image = tf.constant(image / 255.0, tf.float32)
    label_map = tf.constant(np.random.default_rng(6).integers(1, 9, (6, 8)), tf.int32)
    seen = set()
    for s in range(80):
        ops, _, magnitudes, negate, _ = augment.sample([2, s])
        name = augment.transforms[int(ops[0])]
        if name in seen:
            continue
        seen.add(name)
        arg = level_to_arg(name, magnitudes[0], negate[0])
        out_image, out_map = augment(float_image, [2, s], label_map=label_map)
        expected_image, expected_map = apply_op(
            name, image, arg, fill=FILL, label_map=label_map, exact=False
        )
        out_pixels = np.round(out_image.numpy() * 255.0)
        np.testing.assert_array_equal(out_pixels, expected_image, err_msg=name)
        np.testing.assert_array_equal(out_map, expected_map, err_msg=name)
    assert seen == set(RAND_INCREASING_TRANSFORMS)
