"""PaddedReLU against the two layers it replaces, `ReLU` then `ZeroPadding2D`.

The expectations are a numpy reference for the values, TensorFlow's autodiff
through the two-layer form for the gradients, and the traced training graph
for what the backward pass keeps.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.layers import PaddedReLU

SHAPE = (2, 6, 5, 3)


def two_layer_form(padding, max_value):
    return keras.Sequential(
        [keras.layers.ReLU(max_value), keras.layers.ZeroPadding2D(padding)]
    )


def random_inputs(seed=0):
    # Spread over [-9, 9]: below zero, inside (0, 6) and above 6 all occur.
    return tf.constant(np.random.default_rng(seed).uniform(-9, 9, SHAPE).astype("float32"))


@pytest.mark.parametrize("max_value", [None, 6.0])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_values_are_the_padded_relu(padding, max_value, training):
    x = random_inputs()
    expected = np.maximum(x.numpy(), 0.0)
    if max_value is not None:
        expected = np.minimum(expected, max_value)
    expected = np.pad(expected, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    got = PaddedReLU(padding, max_value=max_value)(x, training=training)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("max_value", [None, 6.0])
@pytest.mark.parametrize("padding", [1, 2])
def test_training_gradient_is_the_two_layer_forms(padding, max_value):
    x = random_inputs(seed=1)
    weights = tf.constant(
        np.random.default_rng(2).normal(size=(2, 6 + 2 * padding, 5 + 2 * padding, 3)).astype("float32")
    )

    def gradient(layer, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * weights)  # padding rows weigh too
        return tape.gradient(loss, x).numpy()

    expected = gradient(two_layer_form(padding, max_value), training=True)
    got = gradient(PaddedReLU(padding, max_value=max_value), training=True)
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(expected) and np.count_nonzero(expected == 0)  # both sides of the mask


def activation_consumers(layer):
    """Op types that read the unpadded activation in a traced training step of `layer` + a strided conv."""
    kernel = tf.constant(np.random.default_rng(3).normal(size=(3, 3, 3, 4)).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            padded = layer(x, training=True)
            loss = tf.reduce_sum(tf.nn.conv2d(padded, kernel, 2, "VALID") ** 2)
        return tape.gradient(loss, x)

    graph = step.get_concrete_function(tf.TensorSpec(SHAPE)).graph
    (pad,) = [op for op in graph.get_operations() if op.type in ("Pad", "PadV2")]
    activation = pad.inputs[0]
    return sorted(consumer.type for consumer in activation.consumers())


def test_training_keeps_the_padded_output_only():
    # ReLU then ZeroPadding2D: the ReLU's gradient reads the unpadded output, which
    # the step must then keep beside the padded copy that the conv's gradient reads.
    assert activation_consumers(two_layer_form(1, None)) == ["Pad", "ReluGrad"]
    # PaddedReLU computes that gradient from its padded output: the unpadded one
    # feeds the pad and nothing in the backward pass.
    assert activation_consumers(PaddedReLU(1)) == ["Pad"]


def test_shape_config_and_saving(tmp_path):
    layer = PaddedReLU(1, max_value=6.0, name="relu")
    assert layer.compute_output_shape((None, 112, 112, 96)) == (None, 114, 114, 96)
    assert layer.compute_output_shape((None, None, 7, 8)) == (None, None, 9, 8)
    config = layer.get_config()
    assert (config["padding"], config["max_value"]) == (1, 6.0)
    inputs = keras.Input((6, 5, 3))
    model = keras.Model(inputs, PaddedReLU(2, name="relu")(inputs))
    model.save(tmp_path / "padded_relu.keras")
    loaded = keras.saving.load_model(tmp_path / "padded_relu.keras")
    assert isinstance(loaded.get_layer("relu"), PaddedReLU)
    assert loaded.get_layer("relu").padding == 2
    x = random_inputs(seed=4)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [({"padding": 0}, "padding must be >= 1"), ({"padding": 1, "max_value": 0}, "max_value must be None or > 0")],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaddedReLU(**kwargs)
