"""The two weight layouts a backbone can be built in, and the layers they differ in.

`"keras"` mirrors `keras.applications` exactly (conv biases in ResNet, BN
epsilon 1.001e-5 / 1e-3, TensorFlow's asymmetric `"same"` padding on stride-2
convs, stride on the first 1x1 conv of a ResNet block), so Keras ImageNet
weights load unchanged. `"torch"` mirrors torchvision / MMAction2 /
mit-han-lab (no conv biases, BN epsilon 1e-5, symmetric zero padding on
stride-2 convs, ResNet v1.5 with the stride on the 3x3 conv), so PyTorch
checkpoints give the same logits.
"""

import dataclasses

import keras

from tsm_keras.layers.batch_norm import FusedBatchNormalization

LAYOUTS = ("keras", "torch")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Per-layout choices shared by the backbone builders."""

    name: str
    bn_epsilon: float
    conv_bias: bool
    symmetric_padding: bool

    def conv(self, x, filters, kernel_size, strides=1, name=None, use_bias=None, groups=1):
        """Conv2D with this layout's padding for `strides`."""
        use_bias = self.conv_bias if use_bias is None else use_bias
        x, padding = self._pad(x, kernel_size, strides, name)
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            groups=groups,
            name=name,
        )(x)

    def depthwise_conv(self, x, kernel_size, strides=1, name=None):
        """DepthwiseConv2D (no bias) with this layout's padding for `strides`."""
        x, padding = self._pad(x, kernel_size, strides, name)
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )(x)

    def batch_norm(self, x, name, momentum, epsilon=None):
        return FusedBatchNormalization(
            epsilon=self.bn_epsilon if epsilon is None else epsilon,
            momentum=momentum,
            name=name,
        )(x)

    def _pad(self, x, kernel_size, strides, name):
        if kernel_size == 1 or strides == 1 or not self.symmetric_padding:
            return x, "same" if kernel_size > 1 else "valid"
        pad_name = None if name is None else f"{name}_pad"
        return keras.layers.ZeroPadding2D(kernel_size // 2, name=pad_name)(x), "valid"


def get_layout(name, keras_bn_epsilon, keras_conv_bias):
    """The `Layout` named `name`; `keras.applications` differ per network."""
    if name == "keras":
        return Layout(
            "keras",
            bn_epsilon=keras_bn_epsilon,
            conv_bias=keras_conv_bias,
            symmetric_padding=False,
        )
    if name == "torch":
        return Layout("torch", bn_epsilon=1e-5, conv_bias=False, symmetric_padding=True)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {name!r}")
