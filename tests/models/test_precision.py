"""`tsm_keras.models.precision`: bfloat16 models compute in bfloat16, keep float32 weights and match float32."""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tsm_keras.models import TSM
from tsm_keras.models.precision import (
    PRECISION_POLICIES,
    canonical_precision,
    dtype_policy,
    model_precision,
    precision_scope,
    with_precision,
)
from tsm_keras.training import Trainer, load_config
from tsm_keras.training.config import Config
from tsm_keras.training.testing import load_test_model

CLIPS = np.random.default_rng(0).normal(size=(3, 4, 32, 32, 3)).astype("float32")


def weighted_layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_bfloat16_copy_computes_in_bfloat16_with_float32_weights(tiny_tsm):
    model = tiny_tsm()
    fast = with_precision(model, "bfloat16")
    assert type(fast) is TSM and fast.spec == model.spec and model_precision(fast) == "bfloat16"
    convolutions = weighted_layers(fast, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    assert convolutions and all(layer.compute_dtype == "bfloat16" for layer in convolutions)
    assert all(weight.dtype == "float32" for weight in fast.weights)
    for mine, theirs in zip(fast.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    # The original is untouched, and a model already in the precision is returned as it is.
    assert model_precision(model) == "float32" and with_precision(fast, "mixed_bfloat16") is fast
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_bfloat16_logits_are_float32_and_match_the_float32_model(tiny_tsm):
    """The numpy reference is the float32 model; bfloat16 keeps 8 bits of mantissa (relative step 2^-8)."""
    model = tiny_tsm(seed=1)
    expected = keras.ops.convert_to_numpy(model(CLIPS, training=False))
    logits = with_precision(model, "bfloat16")(CLIPS, training=False)
    assert logits.dtype == "float32"  # SegmentConsensus runs in float32: the softmax reads float32
    logits = keras.ops.convert_to_numpy(logits)
    scale = np.abs(expected).max()
    assert scale > 0.1, "logits near zero: the comparison proves nothing"
    np.testing.assert_allclose(logits, expected, atol=0.05 * scale, rtol=0)
    assert np.abs(logits - expected).max() > 0, "the bfloat16 model computed in float32"


def test_bfloat16_classifier_computes_in_float32(tiny_tsm):
    """Logits rounded to bfloat16 tie or swap when two classes score close; `fc_cls` computes in float32."""
    import tensorflow as tf

    fast = with_precision(tiny_tsm(seed=3), "bfloat16")
    assert fast.get_layer("fc_cls").compute_dtype == "float32"
    assert fast.get_layer("avg_pool").compute_dtype == "bfloat16"
    frame_logits = keras.Model(fast.inputs, fast.get_layer("fc_cls").output)(CLIPS)
    rounded = tf.cast(tf.cast(frame_logits, tf.bfloat16), tf.float32)
    assert np.mean(rounded.numpy() != frame_logits.numpy()) > 0.5, "the per-frame logits are bfloat16 values"


def test_the_copy_back_to_float32_is_exact(tiny_tsm):
    model = tiny_tsm(seed=2)
    with precision_scope("bfloat16"):
        fast = TSM(model.spec)
    fast.set_weights(model.get_weights())
    back = with_precision(fast, "float32")
    assert model_precision(back) == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back(CLIPS, training=False)),
                                  keras.ops.convert_to_numpy(model(CLIPS, training=False)))


def test_a_bfloat16_model_saved_loads_in_the_loading_precision(tiny_tsm, tmp_path):
    """The saved config has no dtype: a `.keras` of a bfloat16 run loads as float32, and converts back."""
    with precision_scope("bfloat16"):
        fast = tiny_tsm(seed=3)
    path = str(tmp_path / "fast.keras")
    fast.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert model_precision(loaded) == "float32"
    again = with_precision(loaded, "bfloat16")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(CLIPS, training=False)),
                                  keras.ops.convert_to_numpy(fast(CLIPS, training=False)))


def test_precision_names_map_to_one_policy_each():
    assert dtype_policy("bfloat16") == dtype_policy("mixed_bfloat16") == "mixed_bfloat16"
    assert canonical_precision("mixed_bfloat16") == "bfloat16"
    assert {name: dtype_policy(name) for name in PRECISION_POLICIES} == PRECISION_POLICIES
    with pytest.raises(ValueError, match="precision: expected one of \\['float32', 'bfloat16', 'mixed_float16'\\]"):
        dtype_policy("float16")


def test_precision_scope_restores_the_policy_after_an_error():
    with pytest.raises(RuntimeError):
        with precision_scope("bfloat16"):
            assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("inside")
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_load_test_model_builds_in_the_requested_precision(tmp_path, tiny_config, tiny_tsm):
    config = Config.from_dict(tiny_config(train={"precision": "bfloat16"}))
    model = TSM(config.model_spec())
    path = str(tmp_path / "final.weights.h5")
    model.save_weights(path)
    assert model_precision(load_test_model(config, path)) == "bfloat16"  # default: train.precision
    tested = load_test_model(config, path, precision="float32")
    assert model_precision(tested) == "float32"
    for mine, theirs in zip(tested.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_fit_in_bfloat16_runs_and_the_loss_falls(tmp_path, tiny_config_file):
    """Five steps on the same two videos: the training loss is finite and falls; the weights stay float32."""
    config_path = tiny_config_file(
        tmp_path / "config.yaml",
        data={"synthetic": {"train_videos_per_class": 1}},
        optimizer={"lr": 0.05, "weight_decay": 0.0},
        train={"epochs": 5, "batch_per_replica": 2, "base_batch_size": 2, "precision": "bfloat16"},
        checkpoint={"interval_epochs": 0},
    )
    result = Trainer(load_config(config_path), str(tmp_path / "work"), verbose=0, test_at_end=False).fit()
    losses = [float(row["loss"]) for row in result.history]
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored after fit
    saved = keras.saving.load_model(result.final_model, compile=False)
    assert all(weight.dtype == "float32" for weight in saved.weights)
