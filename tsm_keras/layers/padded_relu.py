"""A ReLU whose output is zero-padded for the strided convolution or pooling after it."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tsm_keras")
class PaddedReLU(keras.layers.Layer):
    """`ZeroPadding2D(padding)(ReLU(max_value)(x))` as one layer that training keeps once.

    PyTorch pads inside its strided convolutions and max pooling; in Keras a
    `ZeroPadding2D` layer pads before them. After a ReLU that two-layer form
    costs memory in training: the ReLU's gradient keeps the ReLU's output and
    the gradient of the convolution (or pooling) keeps the padded copy, two
    tensors of one activation until the backward pass reaches them. This layer
    computes the ReLU's gradient from its own padded output instead (the mask
    is zero in the padding, which the gradient crops away), so the padded
    output is the only tensor kept.

    In inference it runs the two operations of the two-layer form in the same
    order, so TensorFlow and LiteRT still fuse the ReLU into the convolution
    before it, and exported graphs do not change.

    Args:
        padding: int >= 1, zero rows and columns added on each side of the
            height and the width.
        max_value: `None` for ReLU, a float for a capped ReLU (`6.0`: ReLU6).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> relu = PaddedReLU(1, max_value=6.0)
    >>> relu(keras.random.normal((2, 112, 112, 96))).shape
    (2, 114, 114, 96)
    """

    def __init__(self, padding, max_value=None, **kwargs):
        super().__init__(**kwargs)
        if int(padding) < 1:
            raise ValueError(f"padding must be >= 1, got {padding!r}")
        if max_value is not None and float(max_value) <= 0:
            raise ValueError(f"max_value must be None or > 0, got {max_value!r}")
        self.padding = int(padding)
        self.max_value = None if max_value is None else float(max_value)

    def call(self, inputs, training=None):
        if not training:
            return self._relu_and_pad(inputs)
        padding, max_value = self.padding, self.max_value

        @ops.custom_gradient
        def relu_and_pad(features):
            outputs = self._relu_and_pad(features)

            def gradient(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                passes = outputs > 0
                if max_value is not None:
                    passes = ops.logical_and(passes, outputs < max_value)
                masked = ops.where(passes, upstream, ops.zeros((), dtype=upstream.dtype))
                return masked[:, padding:-padding, padding:-padding, :]

            return outputs, gradient

        return relu_and_pad(inputs)

    def _relu_and_pad(self, inputs):
        activated = keras.activations.relu(inputs, max_value=self.max_value)
        padding = self.padding
        return ops.pad(activated, [[0, 0], [padding, padding], [padding, padding], [0, 0]])

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        padded = [None if size is None else size + 2 * self.padding for size in (height, width)]
        return (batch, *padded, channels)

    def get_config(self):
        config = super().get_config()
        config.update(padding=self.padding, max_value=self.max_value)
        return config
