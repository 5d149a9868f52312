"""Batch normalization that runs as one fused kernel on TensorFlow."""

import keras

# Input dtypes the fused kernel is used for (float16 is upcast to float32, as Keras does).
_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="tsm_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    Keras 3 normalizes with separate ops on every backend: the batch moments
    (a mean, a squared difference, a second mean) and then a multiply and an
    add, each a pass over the activations, and as many again in the gradient.
    On TensorFlow this layer calls `FusedBatchNormV3` instead: one pass
    forward, one fused gradient, and in inference a normalization that
    TensorFlow's graph optimizer folds into the preceding convolution. The
    variables, their names, the configuration and the results are those of
    `keras.layers.BatchNormalization` (the moving variance is updated with
    the biased batch variance, as Keras does); inputs of another rank or
    axis, float64 inputs, masks, renormalization, synchronized statistics and
    the other backends take the Keras path unchanged.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`
            (`momentum`, `epsilon`, `name`, ...).

    Example:

    >>> norm = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> norm(keras.random.normal((8, 14, 14, 32)), training=True).shape
    (8, 14, 14, 32)
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # The kernel takes bfloat16 activations as they are (its statistics and
        # arithmetic are float32 inside, which is why Keras upcasts): no casts
        # around it, and in inference it still folds into the convolution.
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16) else tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        training = bool(training) and self.trainable
        if training:
            empty = tf.constant([], tf.float32)
            outputs, mean, unbiased_variance = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0,
                data_format="NHWC", is_training=True,
            )[:3]
            # The kernel returns the variance with Bessel's correction; Keras'
            # moving variance (like its normalization) uses the biased one.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = unbiased_variance * ((count - 1.0) / tf.maximum(count, 1.0))
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            outputs = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=moving_mean, variance=moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )[0]
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
            and self.axis in (-1, 3)
            and not self.renorm
            and not self.synchronized
        )
