"""Structural reparameterization of a MobileOne TSM: train-time branches -> one conv.

Each train-time MobileOneBlock computes, before its SE and ReLU,

    sum_k BN_k(conv_k(x)) + BN_s(conv1x1(x)) + BN_id(x)

which is linear in `x` in inference mode, so it equals one kxk conv with a
bias. With `s = gamma / sqrt(moving_variance + epsilon)`, a conv + BN branch
is the conv with kernel `W * s` (per output channel) and bias
`beta - moving_mean * s`; the 1x1 kernel is zero-padded to kxk (its tap at
the centre); the identity BN is a kxk kernel with one centred tap per
channel (`eye` for a full conv, ones for a depthwise conv) through the same
formula. Kernels and biases of all branches add up. The arithmetic is done
in float64 (as mmpretrain's `MobileOneBlock.reparameterize`, in Keras layouts).
"""

import keras
import numpy as np

from tsm_keras.models.mobileone import block_settings
from tsm_keras.models.tsm import TSM

MOBILEONE_PREFIX = "mobileone_"


def fold_batch_norm(kernel, batch_norm, depthwise):
    """`(kernel * s, beta - mean * s)` for a conv kernel followed by `batch_norm`.

    Args:
        kernel: array `[k, k, in, out]` (Conv2D) or `[k, k, C, 1]` (depthwise).
        batch_norm: a built `keras.layers.BatchNormalization`.
        depthwise: bool, the kernel is a `DepthwiseConv2D` kernel.
    """
    gamma, beta, mean, variance = _batch_norm_parameters(batch_norm)
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


def fuse_block(layers, setting):
    """Kernel and bias of the single conv equal to one train-time block.

    Args:
        layers: dict layer name -> layer of the train-time model.
        setting: the block's `tsm_keras.models.mobileone.BlockSetting`.

    Returns:
        `(kernel, bias)` float64 arrays in the Keras layout of the block's
        `_reparam_conv` (`Conv2D` or `DepthwiseConv2D`).
    """
    name, size, depthwise = setting.name, setting.kernel_size, setting.depthwise
    kernel, bias = 0.0, 0.0
    for index in range(setting.num_conv_branches):
        conv_kernel = layers[f"{name}_branch{index}_conv"].get_weights()[0]
        branch_kernel, branch_bias = fold_batch_norm(
            conv_kernel, layers[f"{name}_branch{index}_bn"], depthwise
        )
        kernel, bias = kernel + branch_kernel, bias + branch_bias
    if setting.has_scale:
        scale_kernel = layers[f"{name}_scale_conv"].get_weights()[0]
        branch_kernel, branch_bias = fold_batch_norm(
            scale_kernel, layers[f"{name}_scale_bn"], depthwise
        )
        pad = size // 2
        branch_kernel = np.pad(branch_kernel, [(pad, pad), (pad, pad), (0, 0), (0, 0)])
        kernel, bias = kernel + branch_kernel, bias + branch_bias
    if setting.has_identity:
        branch_kernel, branch_bias = fold_batch_norm(
            identity_kernel(setting.in_channels, size, depthwise),
            layers[f"{name}_identity_bn"],
            depthwise,
        )
        kernel, bias = kernel + branch_kernel, bias + branch_bias
    return kernel, bias


def reparameterize(model):
    """The deploy-time twin of a train-time MobileOne TSM, with equal logits.

    Builds the same TSM with `backbone_options["deploy"] = True` (so it saves
    and loads like any TSM), folds every MobileOneBlock's branches into its
    `_reparam_conv` and copies every other weight (SE, classifier) by layer
    name. In inference mode both models give the same logits up to float32
    rounding.

    Args:
        model: a `TSM` on a `mobileone_*` backbone built with
            `backbone_options={"deploy": False}` (the default).

    Returns:
        A new `TSM`; `model` is left unchanged.

    Example:

    >>> train = build_tsm("mobileone_s4", 400, num_segments=8,
    ...                   shift_place="block", layout="torch")
    >>> deploy = reparameterize(train)
    >>> deploy.backbone_options
    {'deploy': True}
    """
    if not isinstance(model, TSM) or not model.backbone.startswith(MOBILEONE_PREFIX):
        raise ValueError(
            "reparameterize needs a TSM on a MobileOne backbone "
            f"({MOBILEONE_PREFIX}s0 .. s4), got {type(model).__name__} "
            f"{getattr(model, 'backbone', None)!r}"
        )
    if model.backbone_options.get("deploy"):
        raise ValueError(f"model {model.name!r} is already reparameterized (deploy=True)")
    config = model.get_config()
    config["backbone_options"] = {**model.backbone_options, "deploy": True}
    deploy = TSM.from_config(config)
    variant = model.backbone[len(MOBILEONE_PREFIX) :]
    train_layers = {layer.name: layer for layer in model.layers}
    fused = {}
    for setting in block_settings(variant):
        fused[f"{setting.name}_reparam_conv"] = fuse_block(train_layers, setting)
    for layer in deploy.layers:
        if not layer.weights:
            continue
        if layer.name in fused:
            kernel, bias = fused[layer.name]
            dtype = layer.weights[0].dtype
            layer.set_weights([kernel.astype(dtype), bias.astype(dtype)])
        elif layer.name in train_layers:
            layer.set_weights(train_layers[layer.name].get_weights())
        else:
            raise ValueError(f"deploy layer {layer.name!r} has no source in model {model.name!r}")
    return deploy


def _batch_norm_parameters(batch_norm):
    """gamma, beta, moving mean, moving variance (float64) of a BN layer."""
    channels = batch_norm.moving_mean.shape[0]
    gamma = keras.ops.convert_to_numpy(batch_norm.gamma) if batch_norm.scale else np.ones(channels)
    beta = keras.ops.convert_to_numpy(batch_norm.beta) if batch_norm.center else np.zeros(channels)
    mean = keras.ops.convert_to_numpy(batch_norm.moving_mean)
    variance = keras.ops.convert_to_numpy(batch_norm.moving_variance)
    return tuple(np.asarray(values, np.float64) for values in (gamma, beta, mean, variance))
