"""FusedBatchNormalization against keras.layers.BatchNormalization (the same variables, one fused kernel).

The expectation is Keras' own layer: the same outputs, input and variable gradients
and moving statistics, in training and in inference, from the same weights.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.layers import FusedBatchNormalization


def pair(shape, momentum=0.9, epsilon=1e-5, seed=0, **kwargs):
    """A Keras BN and a fused BN with the same random weights, built for `shape`."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    weights = [
        rng.normal(size=channels).astype("float32"),  # gamma
        rng.normal(size=channels).astype("float32"),  # beta
        rng.normal(size=channels).astype("float32"),  # moving mean
        rng.uniform(0.5, 2.0, size=channels).astype("float32"),  # moving variance
    ]
    layers = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=momentum, epsilon=epsilon, **kwargs)
        layer.build(shape)
        layer.set_weights(weights)
        layers.append(layer)
    return layers


def outputs_and_gradients(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.sin(y))  # a non-linear loss: every gradient term matters
    gradients = tape.gradient(loss, [x] + layer.trainable_weights)
    return y.numpy(), [g.numpy() for g in gradients]


@pytest.mark.parametrize("training", [False, True])
def test_same_outputs_gradients_and_statistics_as_keras(training):
    x = tf.constant(np.random.default_rng(1).normal(3.0, 2.0, size=(6, 5, 7, 16)).astype("float32"))
    keras_bn, fused_bn = pair(x.shape)
    expected, expected_gradients = outputs_and_gradients(keras_bn, x, training)
    got, got_gradients = outputs_and_gradients(fused_bn, x, training)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for got_gradient, expected_gradient in zip(got_gradients, expected_gradients):
        scale = np.abs(expected_gradient).max()
        np.testing.assert_allclose(got_gradient / scale, expected_gradient / scale, atol=1e-5)
    # Training updates the moving statistics exactly as Keras does (biased batch variance).
    for got_weight, expected_weight in zip(fused_bn.get_weights(), keras_bn.get_weights()):
        np.testing.assert_allclose(got_weight, expected_weight, rtol=1e-6, atol=1e-6)


def test_moving_statistics_follow_the_hand_computed_update():
    x = np.random.default_rng(2).normal(1.0, 3.0, size=(4, 3, 3, 8)).astype("float32")
    _, fused_bn = pair(x.shape, momentum=0.9)
    mean_before, variance_before = fused_bn.moving_mean.numpy(), fused_bn.moving_variance.numpy()
    fused_bn(x, training=True)
    batch_mean = x.mean(axis=(0, 1, 2))
    batch_variance = x.var(axis=(0, 1, 2))  # biased, as keras.ops.moments
    np.testing.assert_allclose(fused_bn.moving_mean.numpy(), 0.9 * mean_before + 0.1 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(
        fused_bn.moving_variance.numpy(), 0.9 * variance_before + 0.1 * batch_variance, rtol=1e-5
    )


def test_frozen_layer_normalizes_with_moving_statistics_even_in_training():
    x = tf.random.normal((4, 3, 3, 8), seed=3)
    keras_bn, fused_bn = pair(x.shape)
    keras_bn.trainable = fused_bn.trainable = False
    np.testing.assert_allclose(fused_bn(x, training=True), keras_bn(x, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused_bn.moving_mean.numpy(), keras_bn.moving_mean.numpy())


@pytest.mark.parametrize("shape,dtype", [((6, 16), "float32"), ((2, 3, 4, 5, 8), "float32"), ((4, 3, 3, 8), "float64")])
def test_other_ranks_and_float64_take_the_keras_path(shape, dtype):
    x = np.random.default_rng(4).normal(size=shape).astype(dtype)
    keras_bn, fused_bn = pair(shape, dtype=dtype)
    for training in (False, True):
        got = keras.ops.convert_to_numpy(fused_bn(x, training=training))
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(keras_bn(x, training=training)), rtol=1e-6)


def test_mixed_bfloat16_computes_in_bfloat16_with_float32_variables():
    x = tf.random.normal((4, 3, 3, 8), seed=5)
    keras_bn, fused_bn = pair(x.shape, dtype="mixed_bfloat16")
    got = fused_bn(tf.cast(x, tf.bfloat16), training=True)
    assert got.dtype == tf.bfloat16 and fused_bn.moving_mean.dtype == "float32"
    expected = keras_bn(tf.cast(x, tf.bfloat16), training=True)
    np.testing.assert_allclose(tf.cast(got, tf.float32), tf.cast(expected, tf.float32), atol=0.05)


def test_round_trip(round_trip, tmp_path):
    inputs = np.random.default_rng(6).normal(size=(4, 3, 3, 8)).astype("float32")
    _, fused_bn = pair(inputs.shape)
    loaded = round_trip(fused_bn, inputs, tmp_path)
    assert isinstance(loaded, keras.layers.BatchNormalization)
