"""MobileNetV2 (width 1.0) with temporal hooks, in the Keras and the PyTorch layout.

Layer names: `stem_conv`, `stem_bn`, `block{i}_expand_conv`, `block{i}_expand_bn`,
`block{i}_depthwise_conv`, `block{i}_depthwise_bn`, `block{i}_project_conv`,
`block{i}_project_bn`, `block{i}_shift`, `last_conv`, `last_bn`, with `i` the
global inverted-residual index 0..16 (`features.{i+1}` in torchvision,
`block_{i}` in `keras.applications`).
"""

import re

import keras

from tsm_keras.models.layout import get_layout

# (expansion, output channels, repeats, first stride) from the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def block_settings():
    """`(index, expansion, in_channels, out_channels, stride)` per block."""
    settings, channels, index = [], STEM_CHANNELS, 0
    for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            settings.append((index, expansion, channels, out_channels, stride))
            channels, index = out_channels, index + 1
    return settings


def shifted_blocks():
    """Global indices of the blocks TSM shifts: residual and expansion != 1."""
    return tuple(
        index
        for index, expansion, in_channels, out_channels, stride in block_settings()
        if expansion != 1 and stride == 1 and in_channels == out_channels
    )


def inverted_residual(x, expansion, out_channels, stride, index, layout, context):
    name = f"block{index}"
    momentum = context.bn_momentum
    in_channels = x.shape[-1]
    residual = stride == 1 and in_channels == out_channels
    temporal = residual and expansion != 1
    if temporal and context.shift_place == "block":
        x = context.shift(x, name=f"{name}_shift")
    branch = x
    if temporal and context.shift_place == "blockres":
        branch = context.shift(branch, name=f"{name}_shift")
    if expansion != 1:
        branch = layout.conv(branch, in_channels * expansion, 1, name=f"{name}_expand_conv")
        branch = layout.batch_norm(branch, f"{name}_expand_bn", momentum)
        branch = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(branch)
    branch = layout.depthwise_conv(branch, 3, stride, name=f"{name}_depthwise_conv")
    branch = layout.batch_norm(branch, f"{name}_depthwise_bn", momentum)
    branch = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(branch)
    branch = layout.conv(branch, out_channels, 1, name=f"{name}_project_conv")
    branch = layout.batch_norm(branch, f"{name}_project_bn", momentum)
    if residual:
        return keras.layers.Add(name=f"{name}_add")([x, branch])
    return branch


def mobilenet_v2_features(frames, context, layout="keras"):
    """MobileNetV2 trunk on `(N*T, H, W, 3)` frames; returns the 1280-channel map.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext` deciding the shifts.
        layout: `"keras"` or `"torch"` (see `tsm_keras.models.layout`).
    """
    if context.use_temporal_pool or context.non_local_mode is not None:
        raise ValueError(
            "temporal_pool and non_local are defined for ResNet backbones only "
            "(as in MMAction2 and mit-han-lab); got them for mobilenet_v2"
        )
    layout = get_layout(layout, keras_bn_epsilon=1e-3, keras_conv_bias=False)
    momentum = context.bn_momentum
    x = layout.conv(frames, STEM_CHANNELS, 3, 2, name="stem_conv")
    x = layout.batch_norm(x, "stem_bn", momentum)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for index, expansion, _, out_channels, stride in block_settings():
        x = inverted_residual(x, expansion, out_channels, stride, index, layout, context)
    x = layout.conv(x, LAST_CHANNELS, 1, name="last_conv")
    x = layout.batch_norm(x, "last_bn", momentum)
    return keras.layers.ReLU(6.0, name="last_relu")(x)


_KERAS_BLOCK_NAME = re.compile(r"block_(\d+)_(expand|depthwise|project)(_BN)?$")
_KERAS_FIXED_NAMES = {
    "Conv1": "stem_conv",
    "bn_Conv1": "stem_bn",
    "Conv_1": "last_conv",
    "Conv_1_bn": "last_bn",
    "expanded_conv_depthwise": "block0_depthwise_conv",
    "expanded_conv_depthwise_BN": "block0_depthwise_bn",
    "expanded_conv_project": "block0_project_conv",
    "expanded_conv_project_BN": "block0_project_bn",
}


def keras_applications_name(name):
    """Our layer name for a `keras.applications` MobileNetV2 layer name, or None."""
    if name in _KERAS_FIXED_NAMES:
        return _KERAS_FIXED_NAMES[name]
    match = _KERAS_BLOCK_NAME.match(name)
    if not match:
        return None
    index, part, is_bn = match.groups()
    return f"block{index}_{part}_{'bn' if is_bn else 'conv'}"
