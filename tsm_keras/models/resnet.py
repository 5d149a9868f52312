"""ResNet-50/101 with temporal hooks, in the Keras and the PyTorch layout.

Layer names follow the PyTorch module paths so that a person (and the
checkpoint importer) can map them: `stem_conv`, `stem_bn`,
`layer{stage}_block{index}_conv{1,2,3}`, `..._bn{1,2,3}`,
`..._downsample_conv`, `..._downsample_bn`, `..._shift`, `..._non_local`,
with `stage` 1..4 and `index` from 0 as in `layer2.0.conv1`.
"""

import re

import keras

from tsm_keras.models.layout import get_layout

RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
# MMAction2's TSM Non-local configuration: after blocks layer2.{0,2}, layer3.{0,2,4}.
NON_LOCAL_BLOCKS = {2: (0, 2), 3: (0, 2, 4)}


def shifted_blocks(depth, shift_place):
    """`{stage: block indices}` that receive a temporal shift.

    `blockres` shifts every block of ResNet-50 and every even-index block of
    deeper ResNets (MMAction2 / mit-han-lab `n_round = 2` when stage 3 has
    >= 23 blocks); `block` shifts every block.
    """
    stages = RESNET_STAGES[depth]
    n_round = 2 if shift_place == "blockres" and stages[2] >= 23 else 1
    return {
        stage: tuple(i for i in range(blocks) if i % n_round == 0)
        for stage, blocks in enumerate(stages, start=1)
    }


def bottleneck(x, filters, stride, downsample, shift, name, layout, context):
    """ResNet bottleneck; `shift` says whether this block is temporal."""
    momentum = context.bn_momentum
    if shift and context.shift_place == "block":
        x = context.shift(x, name=f"{name}_shift")
    shortcut = x
    if downsample:
        shortcut = layout.conv(x, EXPANSION * filters, 1, stride, name=f"{name}_downsample_conv")
        shortcut = layout.batch_norm(shortcut, f"{name}_downsample_bn", momentum)
    branch = x
    if shift and context.shift_place == "blockres":
        branch = context.shift(branch, name=f"{name}_shift")
    # keras.applications strides the first 1x1 conv; ResNet v1.5 (PyTorch) the 3x3.
    stride_1x1, stride_3x3 = (stride, 1) if layout.name == "keras" else (1, stride)
    branch = layout.conv(branch, filters, 1, stride_1x1, name=f"{name}_conv1")
    branch = layout.batch_norm(branch, f"{name}_bn1", momentum)
    branch = keras.layers.ReLU(name=f"{name}_relu1")(branch)
    branch = layout.conv(branch, filters, 3, stride_3x3, name=f"{name}_conv2")
    branch = layout.batch_norm(branch, f"{name}_bn2", momentum)
    branch = keras.layers.ReLU(name=f"{name}_relu2")(branch)
    branch = layout.conv(branch, EXPANSION * filters, 1, 1, name=f"{name}_conv3")
    branch = layout.batch_norm(branch, f"{name}_bn3", momentum)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, branch])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet_features(frames, context, layout="keras", depth=50):
    """ResNet trunk on `(N*T, H, W, 3)` frames; returns the stage-4 feature map.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext` deciding shifts, temporal pool, Non-local.
        layout: `"keras"` or `"torch"` (see `tsm_keras.models.layout`).
        depth: 50 or 101.
    """
    if depth not in RESNET_STAGES:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
    layout = get_layout(layout, keras_bn_epsilon=1.001e-5, keras_conv_bias=True)
    momentum = context.bn_momentum
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(frames)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=layout.conv_bias, name="stem_conv")(x)
    x = layout.batch_norm(x, "stem_bn", momentum)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    shifted = shifted_blocks(depth, context.shift_place)
    for stage, (blocks, width) in enumerate(zip(RESNET_STAGES[depth], STAGE_WIDTHS), start=1):
        if stage == 2:
            x = context.temporal_pool(x, name="temporal_pool")
        for index in range(blocks):
            name = f"layer{stage}_block{index}"
            x = bottleneck(
                x,
                width,
                stride=2 if stage > 1 and index == 0 else 1,
                downsample=index == 0,
                shift=index in shifted[stage],
                name=name,
                layout=layout,
                context=context,
            )
            if index in NON_LOCAL_BLOCKS.get(stage, ()):
                x = context.non_local(x, name=f"{name}_non_local")
    return x


_KERAS_RESNET_NAME = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")


def keras_applications_name(name):
    """Our layer name for a `keras.applications` ResNet layer name, or None."""
    if name in ("conv1_conv", "conv1_bn"):
        return "stem_" + name.split("_")[1]
    match = _KERAS_RESNET_NAME.match(name)
    if not match:
        return None
    stage, block, part, kind = match.groups()
    prefix = f"layer{int(stage) - 1}_block{int(block) - 1}"
    if part == "0":
        return f"{prefix}_downsample_{kind}"
    return f"{prefix}_{kind}{part}"
