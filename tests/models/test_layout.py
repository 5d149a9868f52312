"""Layout: where a conv's input padding comes from (its own ZeroPadding2D or the ReLU before it)."""

import keras
import numpy as np
import pytest

from tsm_keras.layers import PaddedReLU
from tsm_keras.models.layout import get_layout

TORCH = get_layout("torch", keras_bn_epsilon=1e-5, keras_conv_bias=False)
KERAS = get_layout("keras", keras_bn_epsilon=1.001e-5, keras_conv_bias=True)


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def relu_then_strided_conv(layout):
    """`layout.relu` padded for a 3x3/2 conv, then that conv, as a model."""
    inputs = keras.Input((9, 9, 4))
    relu = layout.relu(inputs, "relu", pad_for=(3, 2))
    return keras.Model(inputs, layout.conv(relu, 5, 3, 2, name="conv"))


def test_a_conv_after_a_padding_relu_adds_no_padding_and_computes_the_same():
    fused = relu_then_strided_conv(TORCH)
    assert layer_types(fused) == ["InputLayer", "PaddedReLU", "Conv2D"]
    assert fused.get_layer("conv").padding == "valid"

    # The same conv behind a plain ReLU pads with its own ZeroPadding2D.
    plain_inputs = keras.Input((9, 9, 4))
    plain_relu = keras.layers.ReLU(name="relu")(plain_inputs)
    plain = keras.Model(plain_inputs, TORCH.conv(plain_relu, 5, 3, 2, name="conv"))
    assert layer_types(plain) == ["InputLayer", "ReLU", "ZeroPadding2D", "Conv2D"]
    plain.get_layer("conv").set_weights(fused.get_layer("conv").get_weights())
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 4)).astype("float32")
    np.testing.assert_allclose(fused(x).numpy(), plain(x).numpy(), rtol=1e-6, atol=1e-6)


def test_the_keras_layout_pads_with_same_and_a_plain_relu():
    model = relu_then_strided_conv(KERAS)
    assert layer_types(model) == ["InputLayer", "ReLU", "Conv2D"]
    assert model.get_layer("conv").padding == "same"


def test_a_relu_padded_for_another_conv_is_refused():
    inputs = keras.Input((9, 9, 4))
    padded_by_two = PaddedReLU(2, name="relu")(inputs)
    with pytest.raises(ValueError, match="conv: its input comes from relu, padded by 2, but a 3x3/2 conv needs 1"):
        TORCH.conv(padded_by_two, 5, 3, 2, name="conv")
