"""The two weight layouts a backbone can be built in, and the layers they differ in.

`"keras"` mirrors `keras.applications` exactly (conv biases in ResNet, BN
epsilon 1.001e-5 / 1e-3, TensorFlow's asymmetric `"same"` padding on stride-2
convs, stride on the first 1x1 conv of a ResNet block), so Keras ImageNet
weights load unchanged. `"torch"` mirrors torchvision / MMAction2 /
mit-han-lab (no conv biases, BN epsilon 1e-5, symmetric zero padding on
stride-2 convs, ResNet v1.5 with the stride on the 3x3 conv), so PyTorch
checkpoints give the same logits.

Either layout can be built in its deploy form (`fold_batch_norm`): every
BatchNormalization that follows a conv is folded into that conv, which then
has a bias (`tsm_keras.models.reparameterize` fills it). In inference both
forms compute the same function; the deploy form skips one pass over each
activation and lets TensorFlow fuse a residual block's last conv with its
add and ReLU.
"""

import dataclasses

import keras

from tsm_keras.layers.batch_norm import FusedBatchNormalization
from tsm_keras.layers.padded_relu import PaddedReLU

LAYOUTS = ("keras", "torch")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Per-layout choices shared by the backbone builders.

    Args:
        name: `"keras"` or `"torch"`.
        bn_epsilon: float, BatchNormalization epsilon.
        conv_bias: bool, convs carry a bias.
        symmetric_padding: bool, stride-2 convs pad symmetrically (PyTorch).
        fold_batch_norm: bool, the deploy form: `batch_norm` after a conv
            adds no layer (its conv has a bias instead).
    """

    name: str
    bn_epsilon: float
    conv_bias: bool
    symmetric_padding: bool
    fold_batch_norm: bool = False

    def conv(self, x, filters, kernel_size, strides=1, name=None, use_bias=None, groups=1):
        """Conv2D with this layout's padding for `strides` (none added where `relu(..., pad_for=...)` padded `x`)."""
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
        """DepthwiseConv2D (a bias in the deploy form only) with this layout's padding for `strides`."""
        x, padding = self._pad(x, kernel_size, strides, name)
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=self.fold_batch_norm, name=name
        )(x)

    def batch_norm(self, x, name, momentum, epsilon=None):
        """BatchNormalization of `x`; in the deploy form, `x` itself when a conv made it."""
        if self.fold_batch_norm and isinstance(_producer(x), _CONVS):
            return x
        return FusedBatchNormalization(
            epsilon=self.bn_epsilon if epsilon is None else epsilon,
            momentum=momentum,
            name=name,
        )(x)

    def relu(self, x, name, max_value=None, pad_for=None):
        """ReLU (`max_value=6.0`: ReLU6) of `x`, padded for the conv after it.

        `pad_for=(kernel_size, strides)` names that conv: where this layout
        pads its input, the ReLU pads its own output (`PaddedReLU`, which a
        training step keeps once instead of twice), and the conv adds no
        padding of its own.
        """
        padding = self.padding(*pad_for) if pad_for else 0
        if padding:
            return PaddedReLU(padding, max_value=max_value, name=name)(x)
        return keras.layers.ReLU(max_value, name=name)(x)

    def padding(self, kernel_size, strides):
        """Zero rows and columns on each side that a conv's input gets here (0: none or "same")."""
        if kernel_size == 1 or strides == 1 or not self.symmetric_padding:
            return 0
        return kernel_size // 2

    def _pad(self, x, kernel_size, strides, name):
        padding = self.padding(kernel_size, strides)
        if not padding:
            return x, "same" if kernel_size > 1 else "valid"
        producer = _producer(x)
        if isinstance(producer, PaddedReLU):  # `relu(..., pad_for=...)` padded `x` for this conv
            if producer.padding != padding:
                raise ValueError(
                    f"{name}: its input comes from {producer.name}, padded by {producer.padding}, "
                    f"but a {kernel_size}x{kernel_size}/{strides} conv needs {padding}"
                )
            return x, "valid"
        pad_name = None if name is None else f"{name}_pad"
        return keras.layers.ZeroPadding2D(padding, name=pad_name)(x), "valid"


_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _producer(x):
    """The layer whose output `x` is (None for a model input)."""
    history = getattr(x, "_keras_history", None)
    return None if history is None else history.operation


def get_layout(name, keras_bn_epsilon, keras_conv_bias, fold_batch_norm=False):
    """The `Layout` named `name`; `keras.applications` differ per network.

    With `fold_batch_norm` (the deploy form) every conv has a bias and no
    BatchNormalization follows a conv.
    """
    if name == "keras":
        layout = Layout(
            "keras",
            bn_epsilon=keras_bn_epsilon,
            conv_bias=keras_conv_bias,
            symmetric_padding=False,
        )
    elif name == "torch":
        layout = Layout("torch", bn_epsilon=1e-5, conv_bias=False, symmetric_padding=True)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {name!r}")
    if fold_batch_norm:
        return dataclasses.replace(layout, conv_bias=True, fold_batch_norm=True)
    return layout
