"""The online per-frame TSM: parity with the offline uni-directional model, states, refusals."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tsm_keras import build_tsm
from tsm_keras.models.online import OnlineTemporalShift, OnlineTSM, build_online

from tests.online_reference import per_frame_logits, relative_error, run_online

SIZE = 64
SEGMENTS = 6
CLASSES = 5


@pytest.mark.parametrize(
    "backbone, shift_place, layout",
    [
        ("mobilenet_v2", "blockres", "keras"),
        ("mobilenet_v2", "block", "torch"),
        ("resnet50", "blockres", "torch"),
    ],
)
def test_online_matches_offline_per_frame(backbone, shift_place, layout, tiny_tsm):
    size = SIZE if backbone == "mobilenet_v2" else 32
    offline = tiny_tsm(
        backbone=backbone,
        num_classes=CLASSES,
        num_segments=SEGMENTS,
        shift_place=shift_place,
        direction="unidirectional",
        layout=layout,
        input_shape=(size, size, 3),
    )
    online = build_online(offline)
    clip = np.random.default_rng(1).normal(size=(1, SEGMENTS, size, size, 3)).astype("float32")
    expected = per_frame_logits(offline, clip)
    actual = run_online(online, clip)
    assert relative_error(actual, expected) <= 1e-5
    # The clip prediction is the mean of the per-frame logits (consensus).
    np.testing.assert_allclose(
        actual.mean(axis=0), np.asarray(offline(clip))[0], rtol=1e-5, atol=1e-5 * np.abs(actual).max()
    )


def test_states_carry_the_past(tiny_tsm):
    """Frame t's output changes when an earlier frame changes; never with a later one."""
    offline = tiny_tsm(num_classes=CLASSES, num_segments=4, direction="unidirectional", input_shape=(SIZE, SIZE, 3))
    online = build_online(offline)
    rng = np.random.default_rng(2)
    clip = rng.normal(size=(1, 4, SIZE, SIZE, 3)).astype("float32")
    changed = clip.copy()
    changed[:, 1] = rng.normal(size=(SIZE, SIZE, 3))
    base, other = run_online(online, clip), run_online(online, changed)
    np.testing.assert_array_equal(base[0], other[0])
    # Frames 2 and 3 are identical inputs: only the carried states differ.
    assert not np.array_equal(base[2], other[2]) and not np.array_equal(base[3], other[3])
    # Zero states at the start make the first frame equal to a stateless 2D pass
    # whose shifted channels are zero: the same as a one-frame offline clip.
    one_frame = build_tsm("mobilenet_v2", num_classes=CLASSES, num_segments=1, direction="unidirectional",
                          input_shape=(SIZE, SIZE, 3))
    one_frame.set_weights(offline.get_weights())
    np.testing.assert_allclose(base[0], per_frame_logits(one_frame, clip[:, :1])[0], rtol=1e-5, atol=1e-6)


def test_mobilenet_v2_224_has_the_ten_reference_buffers():
    """1x[56,56,3], 2x[28,28,4], 3x[14,14,8], 2x[14,14,12], 2x[7,7,20]; 27,048 floats (docs/reference.md#online-model)."""
    online = build_online(
        build_tsm("mobilenet_v2", num_classes=27, num_segments=8, direction="unidirectional")
    )
    expected = {
        "state_block2_shift": (1, 56, 56, 3),
        "state_block4_shift": (1, 28, 28, 4),
        "state_block5_shift": (1, 28, 28, 4),
        "state_block7_shift": (1, 14, 14, 8),
        "state_block8_shift": (1, 14, 14, 8),
        "state_block9_shift": (1, 14, 14, 8),
        "state_block11_shift": (1, 14, 14, 12),
        "state_block12_shift": (1, 14, 14, 12),
        "state_block14_shift": (1, 7, 7, 20),
        "state_block15_shift": (1, 7, 7, 20),
    }
    assert online.state_names == tuple(expected)
    assert online.state_shapes == expected
    states = online.init_states()
    assert sum(state.size for state in states.values()) == 27048
    assert all(not state.any() and state.dtype == np.float32 for state in states.values())
    assert sorted(online.input) == sorted(["image", *expected])
    assert sorted(online.output) == sorted(["logits", *expected])
    assert online.input["image"].shape == (1, 224, 224, 3)
    assert online.output["logits"].shape == (1, 27)


def test_tsn_twin_gives_a_stateless_per_frame_model(tiny_tsm):
    offline = tiny_tsm(num_classes=CLASSES, num_segments=3, shift_div=0, input_shape=(SIZE, SIZE, 3))
    online = build_online(offline)
    assert online.state_names == ()
    clip = np.random.default_rng(3).normal(size=(1, 3, SIZE, SIZE, 3)).astype("float32")
    assert relative_error(run_online(online, clip), per_frame_logits(offline, clip)) <= 1e-5


def test_bidirectional_model_is_refused():
    offline = build_tsm("mobilenet_v2", num_classes=CLASSES, num_segments=4, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="unidirectional.*expect the future|expect the future"):
        build_online(offline)


@pytest.mark.parametrize(
    "options, message",
    [({"temporal_pool": True}, "temporal_pool"), ({"non_local": "dot_product"}, "Non-local")],
)
def test_non_causal_models_are_refused(options, message):
    offline = build_tsm(
        "resnet50", num_classes=CLASSES, num_segments=4, direction="unidirectional",
        input_shape=(32, 32, 3), **options,
    )
    with pytest.raises(ValueError, match=message):
        build_online(offline)


def test_online_model_saves_and_loads(tmp_path, tiny_tsm):
    offline = tiny_tsm(num_classes=CLASSES, num_segments=4, direction="unidirectional", input_shape=(SIZE, SIZE, 3))
    online = build_online(offline)
    path = str(tmp_path / "online.keras")
    online.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, OnlineTSM)
    assert loaded.state_names == online.state_names
    clip = np.random.default_rng(4).normal(size=(1, 4, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(run_online(loaded, clip), run_online(online, clip))


def test_online_shift_layer_against_numpy():
    rng = np.random.default_rng(5)
    state = rng.normal(size=(1, 3, 3, 2)).astype("float32")
    frame = rng.normal(size=(1, 3, 3, 17)).astype("float32")
    layer = OnlineTemporalShift(shift_div=8, name="block2_shift")
    shifted, next_state = layer([state, frame])
    expected = frame.copy()
    expected[..., :2] = state  # 17 // 8 = 2 channels come from the previous frame
    np.testing.assert_array_equal(np.asarray(shifted), expected)
    np.testing.assert_array_equal(np.asarray(next_state), frame[..., :2])
    assert layer.compute_output_shape(((1, 3, 3, 2), (1, 3, 3, 17))) == ((1, 3, 3, 17), (1, 3, 3, 2))
    assert OnlineTemporalShift.from_config(layer.get_config()).shift_div == 8
    with pytest.raises(ValueError, match="expected 17 // 8 = 2"):
        layer([frame[..., :3], frame])
