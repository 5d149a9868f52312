"""Folding a conv followed by BatchNorm into one conv (structural reparameterization).

In inference mode a BatchNorm after a conv is affine per output channel, so
the pair is one conv with a bias. With `s = gamma / sqrt(moving_variance +
epsilon)`, the folded kernel is `W * s` (per output channel) and the bias
`beta + (b - moving_mean) * s`, `b` the conv's own bias (0 without one). A
BN-only identity branch is the same formula on the kxk kernel of the
identity map (one centred tap per channel: `eye` for a full conv, ones for a
depthwise conv). The arithmetic is done in float64 (as
mmpretrain's `MobileOneBlock.reparameterize`), in Keras kernel layouts.
"""

import keras
import numpy as np


def fold_batch_norm(kernel, batch_norm, depthwise, bias=None):
    """`(kernel * s, beta + (bias - mean) * s)` for a conv followed by `batch_norm`.

    Args:
        kernel: array `[k, k, in, out]` (Conv2D) or `[k, k, C, 1]` (depthwise).
        batch_norm: a built `keras.layers.BatchNormalization`.
        depthwise: bool, the kernel is a `DepthwiseConv2D` kernel.
        bias: the conv's own bias, or None (no bias).
    """
    gamma, beta, mean, variance = batch_norm_parameters(batch_norm)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    kernel = np.asarray(kernel, np.float64)
    if depthwise:
        folded = kernel * scale[None, None, :, None]
    else:
        folded = kernel * scale[None, None, None, :]
    if bias is not None:
        mean = mean - np.asarray(bias, np.float64)
    return folded, beta - mean * scale


def fold_conv_batch_norms(layers):
    """The deploy-form weights of every conv of a train-time model: `{name: (kernel, bias)}`.

    A conv whose output goes only to a BatchNormalization has that
    normalization folded in (`fold_batch_norm`); any other conv keeps its
    kernel and its bias (zeros when it has none: every conv of a deploy form
    has one). This is the `fuse` of the backbones whose deploy form only
    folds normalizations (`tsm_keras.models.layout`).

    Args:
        layers: `{name: layer}` of a train-time model.

    Raises:
        ValueError: a normalized conv output also feeds another layer (the
            deploy form would feed that layer the normalized value).
    """
    weights = {}
    for name, layer in layers.items():
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if not (depthwise or isinstance(layer, keras.layers.Conv2D)):
            continue
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float64)
        bias = keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else None
        # Distinct layers: a layer reused by another model has one node per call.
        consumers = list({id(node.operation): node.operation for node in layer._outbound_nodes}.values())
        normalizations = [
            consumer
            for consumer in consumers
            if isinstance(consumer, keras.layers.BatchNormalization)
        ]
        if normalizations and len(consumers) > 1:
            raise ValueError(
                f"conv {name!r} feeds {[consumer.name for consumer in consumers]}: its "
                "BatchNormalization can only be folded when it is the conv's only consumer"
            )
        if normalizations:
            weights[name] = fold_batch_norm(kernel, normalizations[0], depthwise, bias)
        else:
            channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
            weights[name] = (kernel, np.zeros(channels) if bias is None else np.asarray(bias, np.float64))
    return weights


def identity_kernel(channels, kernel_size, depthwise):
    """The kxk kernel of the identity map (one centred tap per channel)."""
    centre = kernel_size // 2
    if depthwise:
        kernel = np.zeros((kernel_size, kernel_size, channels, 1))
        kernel[centre, centre, :, 0] = 1.0
    else:
        kernel = np.zeros((kernel_size, kernel_size, channels, channels))
        kernel[centre, centre] = np.eye(channels)
    return kernel


def batch_norm_parameters(batch_norm):
    """gamma, beta, moving mean, moving variance (float64) of a BN layer."""
    channels = batch_norm.moving_mean.shape[0]
    gamma = keras.ops.convert_to_numpy(batch_norm.gamma) if batch_norm.scale else np.ones(channels)
    beta = keras.ops.convert_to_numpy(batch_norm.beta) if batch_norm.center else np.zeros(channels)
    mean = keras.ops.convert_to_numpy(batch_norm.moving_mean)
    variance = keras.ops.convert_to_numpy(batch_norm.moving_variance)
    return tuple(np.asarray(values, np.float64) for values in (gamma, beta, mean, variance))
