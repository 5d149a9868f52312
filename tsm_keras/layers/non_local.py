"""Space-time Non-local block (Wang et al., CVPR 2018) on TSM frame batches."""

import keras
from keras import ops

from tsm_keras.layers.batch_norm import FusedBatchNormalization

NON_LOCAL_MODES = ("dot_product", "gaussian", "embedded_gaussian")


@keras.saving.register_keras_serializable(package="tsm_keras")
class NonLocal(keras.layers.Layer):
    """Non-local block over all `T x H x W` positions of a clip.

    Mirrors mmcv's `NonLocal3d` as MMAction2's TSM configures it: 1x1x1
    convolutions `g`, `theta`, `phi` (no `theta`/`phi` in `"gaussian"` mode,
    where the raw input is compared), spatial max-pool (1, 2, 2) on `phi` and
    `g` (`sub_sample`), no scaling, and an output 1x1x1 convolution followed by
    BatchNorm whose gamma starts at zero, so a fresh block is the identity:
    `out = x + BN(conv_out(softmax(theta(x) phi(x)^T) g(x)))`.

    Args:
        num_segments: int, frames per clip `T` (the input is `(N*T, H, W, C)`).
        mode: `"embedded_gaussian"`, `"gaussian"` or `"dot_product"`.
        reduction: int, inner channels are `C // reduction`.
        sub_sample: bool, max-pool `phi` and `g` by 2 in space.
        use_scale: bool, divide embedded-gaussian affinities by `sqrt(C')`.
        bn_epsilon: float, epsilon of the output BatchNorm.
        bn_momentum: float, Keras momentum of the output BatchNorm.
        **kwargs: base layer arguments.

    Example:

    >>> block = NonLocal(num_segments=8, mode="embedded_gaussian")
    >>> block(keras.random.normal((16, 14, 14, 64))).shape
    (16, 14, 14, 64)
    """

    def __init__(
        self,
        num_segments,
        mode="embedded_gaussian",
        reduction=2,
        sub_sample=True,
        use_scale=False,
        bn_epsilon=1e-5,
        bn_momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in NON_LOCAL_MODES:
            raise ValueError(f"Non-local mode must be one of {NON_LOCAL_MODES}, got {mode!r}")
        self.num_segments = int(num_segments)
        self.mode = mode
        self.reduction = int(reduction)
        self.sub_sample = bool(sub_sample)
        self.use_scale = bool(use_scale)
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum

    def build(self, input_shape):
        channels = input_shape[-1]
        self.inter_channels = max(channels // self.reduction, 1)

        def pointwise(filters, name, use_bias=True, init=None):
            return keras.layers.Conv2D(
                filters,
                1,
                use_bias=use_bias,
                kernel_initializer=init or keras.initializers.RandomNormal(stddev=0.01),
                name=name,
                dtype=self.dtype_policy,
            )

        self.g = pointwise(self.inter_channels, "g")
        self.g.build(input_shape)
        if self.mode != "gaussian":
            self.theta = pointwise(self.inter_channels, "theta")
            self.theta.build(input_shape)
            self.phi = pointwise(self.inter_channels, "phi")
            self.phi.build(input_shape)
        inner_shape = tuple(input_shape[:-1]) + (self.inter_channels,)
        self.conv_out = pointwise(channels, "conv_out", use_bias=False)
        self.conv_out.build(inner_shape)
        self.bn = FusedBatchNormalization(
            epsilon=self.bn_epsilon,
            momentum=self.bn_momentum,
            gamma_initializer="zeros",
            name="bn",
            dtype=self.dtype_policy,
        )
        self.bn.build(input_shape)
        self.pool = keras.layers.MaxPooling2D(2, name="sub_sample")

    def _positions(self, x):
        """`(N*T, h, w, c) -> (N, T*h*w, c)`."""
        _, height, width, channels = x.shape
        return ops.reshape(x, (-1, self.num_segments * height * width, channels))

    def call(self, inputs, training=None):
        pooled_input = self.pool(inputs) if self.sub_sample else inputs
        g = self._positions(self.pool(self.g(inputs)) if self.sub_sample else self.g(inputs))
        if self.mode == "gaussian":
            theta = self._positions(inputs)
            phi = self._positions(pooled_input)
        else:
            theta = self._positions(self.theta(inputs))
            phi_map = self.phi(inputs)
            phi = self._positions(self.pool(phi_map) if self.sub_sample else phi_map)
        affinity = ops.matmul(theta, ops.transpose(phi, (0, 2, 1)))
        if self.mode == "dot_product":
            affinity = affinity / ops.cast(ops.shape(affinity)[-1], affinity.dtype)
        else:
            if self.mode == "embedded_gaussian" and self.use_scale:
                affinity = affinity / ops.sqrt(ops.cast(self.inter_channels, affinity.dtype))
            affinity = ops.softmax(affinity, axis=-1)
        context = ops.matmul(affinity, g)
        height, width = inputs.shape[1], inputs.shape[2]
        context = ops.reshape(context, (-1, height, width, self.inter_channels))
        return inputs + self.bn(self.conv_out(context), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def multiply_accumulates(self, input_shape):
        """MACs for a concrete `(frames, H, W, C)` input (table convention)."""
        frames, height, width, channels = input_shape
        positions = frames * height * width
        pooled = frames * (height // 2) * (width // 2) if self.sub_sample else positions
        inner = max(channels // self.reduction, 1)
        convs = positions * channels * inner * (1 if self.mode == "gaussian" else 3)
        convs += positions * inner * channels  # conv_out
        compare_channels = channels if self.mode == "gaussian" else inner
        matmuls = positions * pooled * compare_channels + positions * pooled * inner
        batch_norm = 2 * positions * channels
        return convs + matmuls + batch_norm

    def get_config(self):
        config = super().get_config()
        config.update(
            num_segments=self.num_segments,
            mode=self.mode,
            reduction=self.reduction,
            sub_sample=self.sub_sample,
            use_scale=self.use_scale,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
        )
        return config
