"""TemporalShift against a plain numpy reference written from its definition (docs/reference.md#the-temporal-shift)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tests.layers.kernel_helpers import kernel  # noqa: F401 (fixture)
from tsm_keras import TemporalShift


def numpy_shift(frames, num_segments, shift_div, direction):
    """Reference: loops over clips, frames and channels, no slicing tricks."""
    total, height, width, channels = frames.shape
    fold = channels // shift_div
    out = frames.copy()
    for clip in range(total // num_segments):
        for t in range(num_segments):
            row = clip * num_segments + t
            for c in range(channels):
                if direction == "bidirectional" and c < fold:
                    source = t + 1  # from the next frame
                elif direction == "bidirectional" and c < 2 * fold:
                    source = t - 1  # from the previous frame
                elif direction == "unidirectional" and c < fold:
                    source = t - 1
                else:
                    continue
                if 0 <= source < num_segments:
                    out[row, :, :, c] = frames[clip * num_segments + source, :, :, c]
                else:
                    out[row, :, :, c] = 0.0
    return out


@pytest.mark.parametrize("direction", ["bidirectional", "unidirectional"])
@pytest.mark.parametrize(
    "channels,shift_div",
    [(16, 8), (20, 8), (13, 4), (5, 8), (3, 8), (64, 8), (8, 1)],
)
def test_matches_numpy_reference(direction, channels, shift_div, kernel):
    rng = np.random.default_rng(channels * 31 + shift_div)
    num_segments = 4
    frames = rng.normal(size=(2 * num_segments, 3, 5, channels)).astype("float32")
    layer = TemporalShift(num_segments, shift_div=shift_div, direction=direction)
    got = keras.ops.convert_to_numpy(layer(frames))
    np.testing.assert_array_equal(got, numpy_shift(frames, num_segments, shift_div, direction))


def test_hand_computed_values(kernel):
    # One clip of T=3 frames, 1x1 pixels, 8 channels, shift_div 4 -> fold 2.
    # Frame t has value 10*t + c in channel c.
    frames = np.array(
        [[[[10.0 * t + c for c in range(8)]]] for t in range(3)], dtype="float32"
    )
    bidirectional = keras.ops.convert_to_numpy(TemporalShift(3, shift_div=4)(frames))[:, 0, 0]
    np.testing.assert_array_equal(
        bidirectional,
        [
            [10, 11, 0, 0, 4, 5, 6, 7],  # channels 0-1 from t=1, 2-3 from t=-1 (zero)
            [20, 21, 2, 3, 14, 15, 16, 17],
            [0, 0, 12, 13, 24, 25, 26, 27],  # channels 0-1 from t=3 (zero)
        ],
    )
    unidirectional = keras.ops.convert_to_numpy(
        TemporalShift(3, shift_div=4, direction="unidirectional")(frames)
    )[:, 0, 0]
    np.testing.assert_array_equal(
        unidirectional,
        [
            [0, 0, 2, 3, 4, 5, 6, 7],
            [0, 1, 12, 13, 14, 15, 16, 17],
            [10, 11, 22, 23, 24, 25, 26, 27],
        ],
    )


def test_zero_edges_and_no_wraparound(kernel):
    frames = np.ones((8, 2, 2, 16), dtype="float32")
    out = keras.ops.convert_to_numpy(TemporalShift(8, shift_div=8)(frames))
    assert np.all(out[7, ..., 0:2] == 0)  # last frame has no future
    assert np.all(out[0, ..., 2:4] == 0)  # first frame has no past
    assert np.all(out[1:7] == 1)


def test_fewer_channels_than_shift_div_is_identity():
    frames = np.random.default_rng(0).normal(size=(4, 2, 2, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(TemporalShift(4, shift_div=8)(frames))
    np.testing.assert_array_equal(out, frames)


def test_shift_div_zero_disables():
    frames = np.random.default_rng(1).normal(size=(4, 2, 2, 16)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(TemporalShift(4, shift_div=0)(frames)), frames
    )


def test_config_round_trip_and_output_shape():
    layer = TemporalShift(16, shift_div=4, direction="unidirectional", name="shift")
    clone = TemporalShift.from_config(layer.get_config())
    assert (clone.num_segments, clone.shift_div, clone.direction, clone.name) == (
        16,
        4,
        "unidirectional",
        "shift",
    )
    assert layer.compute_output_shape((None, 7, 7, 32)) == (None, 7, 7, 32)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_segments": 0}, "num_segments"),
        ({"num_segments": 8, "shift_div": -1}, "shift_div"),
        ({"num_segments": 8, "direction": "forward"}, "direction"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemporalShift(**kwargs)


BACKEND_SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras
    from tsm_keras import TemporalShift
    assert keras.backend.backend() == "{backend}", keras.backend.backend()
    frames = np.arange(2 * 4 * 1 * 1 * 16, dtype="float32").reshape(8, 1, 1, 16)
    for direction in ("bidirectional", "unidirectional"):
        out = keras.ops.convert_to_numpy(TemporalShift(4, direction=direction)(frames))
        np.save("{out}_" + direction + ".npy", out)
    inputs = keras.Input((4, 4, 16), batch_size=8)
    model = keras.Model(inputs, TemporalShift(4)(inputs))
    assert tuple(model.output.shape) == (8, 4, 4, 16)
    """
)


@pytest.mark.parametrize("backend,module", [("jax", "jax"), ("torch", "torch")])
def test_other_keras_backends_match_tensorflow(backend, module, tmp_path):
    pytest.importorskip(module, reason=f"the {backend} backend is not installed")
    out = tmp_path / backend
    env = dict(os.environ, KERAS_BACKEND=backend)
    script = BACKEND_SCRIPT.format(backend=backend, out=out)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frames = np.arange(2 * 4 * 1 * 1 * 16, dtype="float32").reshape(8, 1, 1, 16)
    for direction in ("bidirectional", "unidirectional"):
        np.testing.assert_array_equal(
            np.load(f"{out}_{direction}.npy"), numpy_shift(frames, 4, 8, direction)
        )


@pytest.mark.parametrize("direction", ["bidirectional", "unidirectional"])
def test_training_gradient_is_the_opposite_shift(direction, kernel):
    """In training the gradient is given explicitly (the opposite shift; for the native
    kernel, its registered gradient); it must equal the gradient of the shift's numpy
    definition: d sum(w * shift(x)) / dx = shift^T(w)."""
    import tensorflow as tf

    num_segments, shift_div = 4, 4
    rng = np.random.default_rng(7)
    frames = tf.constant(rng.normal(size=(2 * num_segments, 2, 3, 8)).astype("float32"))
    weights = rng.normal(size=frames.shape).astype("float32")
    layer = TemporalShift(num_segments, shift_div=shift_div, direction=direction)
    with tf.GradientTape() as tape:
        tape.watch(frames)
        shifted = layer(frames, training=True)
        loss = tf.reduce_sum(shifted * weights)
    gradient = tape.gradient(loss, frames).numpy()
    np.testing.assert_array_equal(shifted.numpy(), numpy_shift(frames.numpy(), num_segments, shift_div, direction))
    # The shift is a 0/1 matrix S (out = S x): the gradient is S^T w, built from the reference column by column.
    flat = frames.numpy().size
    basis = np.eye(flat, dtype="float32").reshape((flat,) + tuple(frames.shape))
    matrix = np.stack([numpy_shift(e, num_segments, shift_div, direction).ravel() for e in basis], axis=1)
    np.testing.assert_allclose(gradient.ravel(), matrix.T @ weights.ravel(), atol=1e-6)
