"""Folding a conv followed by BatchNorm into one conv (structural reparameterization).

In inference mode a BatchNorm after a conv is affine per output channel, so
the pair is one conv with a bias. With `s = gamma / sqrt(moving_variance +
epsilon)`, the folded kernel is `W * s` (per output channel) and the bias
`beta - moving_mean * s`. A BN-only identity branch is the same formula on
the kxk kernel of the identity map (one centred tap per channel: `eye` for a
full conv, ones for a depthwise conv). The arithmetic is done in float64 (as
mmpretrain's `MobileOneBlock.reparameterize`), in Keras kernel layouts.
"""

import keras
import numpy as np


def fold_batch_norm(kernel, batch_norm, depthwise):
    """`(kernel * s, beta - mean * s)` for a conv kernel followed by `batch_norm`.

    Args:
        kernel: array `[k, k, in, out]` (Conv2D) or `[k, k, C, 1]` (depthwise).
        batch_norm: a built `keras.layers.BatchNormalization`.
        depthwise: bool, the kernel is a `DepthwiseConv2D` kernel.
    """
    gamma, beta, mean, variance = batch_norm_parameters(batch_norm)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    kernel = np.asarray(kernel, np.float64)
    if depthwise:
        folded = kernel * scale[None, None, :, None]
    else:
        folded = kernel * scale[None, None, None, :]
    return folded, beta - mean * scale


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
