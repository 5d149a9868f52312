"""ResNet-50/101 (bottleneck blocks) with temporal hooks, in the Keras and the PyTorch layout.

Layer names follow the PyTorch module paths so that a person (and the
checkpoint importer) can map them: `stem_conv`, `stem_bn`,
`layer{stage}_block{index}_conv{1,2,3}`, `..._bn{1,2,3}`,
`..._downsample_conv`, `..._downsample_bn`, `..._shift`, `..._non_local`,
with `stage` 1..4 and `index` from 0 as in `layer2.0.conv1`.

The stem, the stage loop, the shift placement and the PyTorch key paths are
written for any ResNet block (bottleneck here, the basic block of
ResNet-18/34 in `resnet_basic.py`), which passes its own block function.

PyTorch key paths (`layer2_block0_conv1` of a ResNet-50, shift `blockres`):

| family        | module path                          | wrappers                   |
|---------------|--------------------------------------|----------------------------|
| `mmaction2`   | `layer2.0.conv1.conv.net`            | mmcv `ConvModule` (`.conv` / `.bn`), `TemporalShift(conv)`, `NL3DWrapper` (`.block`, `.non_local_block`), `TemporalPool(layer2)` (`layer2.net`) |
| `mit`         | `layer2.0.conv1.net`                 | torchvision names, `TemporalShift(conv1)`, `TemporalPool(layer2)` |
| `torchvision` | `layer2.0.conv1`                     | none (ImageNet backbone)   |

With shift `block` the whole block is wrapped instead: `layer2.0.net.conv1...`.
"""

import functools
import re

import keras

from tsm_keras.layers import PaddedReLU
from tsm_keras.models.backbones.base import BackboneSpec
from tsm_keras.models.backbones.folding import fold_conv_batch_norms
from tsm_keras.models.layout import get_layout
from tsm_keras.weights.key_maps import UnsupportedArchitectureError

RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
# MMAction2's TSM Non-local configuration: after blocks layer2.{0,2}, layer3.{0,2,4}.
NON_LOCAL_BLOCKS = {2: (0, 2), 3: (0, 2, 4)}


def shifted_blocks(stages, shift_place):
    """`{stage: block indices}` that receive a temporal shift.

    Args:
        stages: blocks per stage, e.g. `(3, 4, 6, 3)`.
        shift_place: `"blockres"` or `"block"`.

    `blockres` shifts every block of ResNet-50 (and shallower) and every
    even-index block of deeper ResNets (MMAction2 / mit-han-lab
    `n_round = 2` when stage 3 has >= 23 blocks); `block` shifts every block.
    """
    n_round = 2 if shift_place == "blockres" and stages[2] >= 23 else 1
    return {
        stage: tuple(i for i in range(blocks) if i % n_round == 0)
        for stage, blocks in enumerate(stages, start=1)
    }


def residual_inputs(x, out_channels, stride, downsample, shift, name, layout, context):
    """`(shortcut, residual branch input)` of a ResNet block, with its shift in place.

    Placement `block` shifts the block input (both paths), `blockres` only
    the residual branch, in front of its first conv. The shortcut is `x`, or
    a strided 1x1 conv + BN to `out_channels` when `downsample`.
    """
    if shift and context.shift_place == "block":
        x = context.shift(x, name=f"{name}_shift")
    shortcut = x
    if downsample:
        shortcut = layout.conv(x, out_channels, 1, stride, name=f"{name}_downsample_conv")
        shortcut = layout.batch_norm(shortcut, f"{name}_downsample_bn", context.bn_momentum)
    branch = x
    if shift and context.shift_place == "blockres":
        branch = context.shift(branch, name=f"{name}_shift")
    return shortcut, branch


def residual_output(shortcut, branch, name):
    """`relu(shortcut + branch)`, the end of every ResNet block."""
    x = keras.layers.Add(name=f"{name}_add")([shortcut, branch])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def bottleneck(x, filters, stride, downsample, shift, name, layout, context):
    """ResNet bottleneck; `shift` says whether this block is temporal."""
    momentum = context.bn_momentum
    shortcut, branch = residual_inputs(
        x, EXPANSION * filters, stride, downsample, shift, name, layout, context
    )
    # keras.applications strides the first 1x1 conv; ResNet v1.5 (PyTorch) the 3x3.
    stride_1x1, stride_3x3 = (stride, 1) if layout.name == "keras" else (1, stride)
    branch = layout.conv(branch, filters, 1, stride_1x1, name=f"{name}_conv1")
    branch = layout.batch_norm(branch, f"{name}_bn1", momentum)
    branch = layout.relu(branch, f"{name}_relu1", pad_for=(3, stride_3x3))
    branch = layout.conv(branch, filters, 3, stride_3x3, name=f"{name}_conv2")
    branch = layout.batch_norm(branch, f"{name}_bn2", momentum)
    branch = keras.layers.ReLU(name=f"{name}_relu2")(branch)
    branch = layout.conv(branch, EXPANSION * filters, 1, 1, name=f"{name}_conv3")
    branch = layout.batch_norm(branch, f"{name}_bn3", momentum)
    return residual_output(shortcut, branch, name)


def stem(frames, layout, momentum):
    """7x7/2 conv, BN, ReLU, 3x3/2 max pool (torchvision `conv1`, `bn1`, `maxpool`)."""
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(frames)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=layout.conv_bias, name="stem_conv")(x)
    x = layout.batch_norm(x, "stem_bn", momentum)
    # Both layouts pad the max pool's input symmetrically (keras.applications too).
    x = PaddedReLU(1, name="stem_relu")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def resnet_trunk(
    frames, context, layout, stages, block, expansion, non_local_blocks=NON_LOCAL_BLOCKS
):
    """Stem and four stages of `block`; returns `(features, num_segments_after)`.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext` deciding shifts, temporal pool, Non-local.
        layout: a `Layout`.
        stages: blocks per stage.
        block: `(x, filters, stride, downsample, shift, name, layout,
            context) -> y`, e.g. `bottleneck`.
        expansion: output channels of a block per `filters` (4 for
            bottleneck blocks); a block gets a downsample shortcut when its
            stride or channel count changes (torchvision's rule).
        non_local_blocks: `{stage: block indices}` followed by a Non-local
            block when the context has a Non-local mode.
    """
    x = stem(frames, layout, context.bn_momentum)
    shifted = shifted_blocks(stages, context.shift_place)
    for stage, (blocks, width) in enumerate(zip(stages, STAGE_WIDTHS), start=1):
        if stage == 2:
            x, context = context.temporal_pool(x, name="temporal_pool")
        for index in range(blocks):
            name = f"layer{stage}_block{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            x = block(
                x,
                width,
                stride=stride,
                downsample=stride != 1 or x.shape[-1] != width * expansion,
                shift=index in shifted[stage],
                name=name,
                layout=layout,
                context=context,
            )
            if index in non_local_blocks.get(stage, ()):
                x = context.non_local(x, name=f"{name}_non_local")
    return x, context.num_segments


def resnet_features(frames, context, layout="keras", depth=50, deploy=False):
    """ResNet-50/101 trunk on `(N*T, H, W, 3)` frames.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext` deciding shifts, temporal pool, Non-local.
        layout: `"keras"` or `"torch"` (see `tsm_keras.models.layout`).
        depth: 50 or 101.
        deploy: bool, the deploy form: every BatchNormalization folded into
            the conv before it (`tsm_keras.reparameterize` fills it).

    Returns:
        `(stage-4 feature map, num_segments after the temporal pool)`.
    """
    if depth not in RESNET_STAGES:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
    layout = get_layout(
        layout, keras_bn_epsilon=1.001e-5, keras_conv_bias=True, fold_batch_norm=bool(deploy)
    )
    return resnet_trunk(frames, context, layout, RESNET_STAGES[depth], bottleneck, EXPANSION)


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


# -- PyTorch checkpoints ----------------------------------------------------------

_BLOCK_LAYER = re.compile(
    r"layer(\d)_block(\d+)_(conv\d|bn\d|downsample_conv|downsample_bn|non_local)$"
)


def torch_module_path(name, structure, family, mmcv, wraps_shifts, non_local):
    """The PyTorch module path of Keras layer `name` in one checkpoint family.

    Args:
        name: Keras layer name.
        structure: `tsm_keras.weights.key_maps.ModelStructure` of the model.
        family: the family's name (for errors).
        mmcv: bool, mmcv `ConvModule` names (`conv1.conv`, `conv1.bn`)
            instead of torchvision's (`conv1`, `bn1`).
        wraps_shifts: bool, the family's `TemporalShift` / `TemporalPool`
            wrap modules (adding `.net`).
        non_local: `"wrapped"` (MMAction2 `NL3DWrapper`: `.block` and
            `.non_local_block`), `"absent"` (an ImageNet file: the blocks
            keep their names, the Non-local layers are new) or None (no
            Non-local layout).

    Returns:
        The module path, or None for a layer this mapping does not know.
    """
    if name in ("stem_conv", "stem_bn"):
        torch_names = ("conv1.conv", "conv1.bn") if mmcv else ("conv1", "bn1")
        return torch_names[name == "stem_bn"]
    match = _BLOCK_LAYER.match(name)
    if not match:
        return None
    stage, index, part = int(match.group(1)), int(match.group(2)), match.group(3)
    block = f"layer{stage}"
    if stage == 2 and structure.temporal_pool and wraps_shifts:
        block += ".net"  # TemporalPool(layer2)
    block += f".{index}"
    has_non_local = structure.has(f"layer{stage}_block{index}_non_local")
    if (part == "non_local" or has_non_local) and non_local is None:
        raise UnsupportedArchitectureError(f"{family} checkpoints have no Non-local layout")
    if part == "non_local":
        return block + ".non_local_block"
    if has_non_local and non_local == "wrapped":
        block += ".block"
    shifted = structure.shifts and structure.has(f"layer{stage}_block{index}_shift")
    if shifted and wraps_shifts and structure.shift_place == "block":
        block += ".net"
    shift_conv1 = shifted and wraps_shifts and structure.shift_place == "blockres"
    return f"{block}.{_part_path(part, mmcv, shift_conv1)}"


def _part_path(part, mmcv, shift_conv1):
    """`conv1`, `bn2`, `downsample_conv`, ... inside a block."""
    if part.startswith("downsample"):
        if mmcv:
            return "downsample." + ("conv" if part.endswith("conv") else "bn")
        return "downsample." + ("0" if part.endswith("conv") else "1")
    kind, number = part[:-1], part[-1]
    if kind == "bn":
        return f"conv{number}.bn" if mmcv else f"bn{number}"
    path = f"conv{number}.conv" if mmcv else f"conv{number}"
    return path + (".net" if number == "1" and shift_conv1 else "")


TORCH_PATHS = {
    "mmaction2": functools.partial(
        torch_module_path, family="mmaction2", mmcv=True, wraps_shifts=True, non_local="wrapped"
    ),
    "mit": functools.partial(
        torch_module_path, family="mit", mmcv=False, wraps_shifts=True, non_local=None
    ),
    "torchvision": functools.partial(
        torch_module_path, family="torchvision", mmcv=False, wraps_shifts=False, non_local="absent"
    ),
}
TORCHVISION_HEAD_KEYS = ("fc.weight", "fc.bias")

_STAGE3_BLOCK = re.compile(r"layer3\.(?:net\.)?(\d+)\.")


def recognizes(body, stages, bottleneck_blocks):
    """Whether checkpoint keys `body` hold a ResNet with `stages` of this block type.

    A ResNet has `layer1..layer4` and nothing deeper (MMAction2's
    MobileNetV2 goes to `layer7`); its depth shows in the blocks of `layer3`
    (6 for ResNet-34/50, 23 for ResNet-101), its block type in `conv3`
    (bottleneck blocks only).
    """
    if not any(key.startswith("layer4.") for key in body):
        return False
    if any(key.startswith(("layer5.", "layer7.")) for key in body):
        return False
    if any(".conv3." in key for key in body) != bottleneck_blocks:
        return False
    stage3 = {int(match.group(1)) for key in body for match in [_STAGE3_BLOCK.match(key)] if match}
    return len(stage3) == stages[2]


_POOL_WRAPPER = re.compile(r"^layer2\.net\.\d+\.")
_BLOCK_WRAPPER = re.compile(r"layer\d\.(?:net\.)?\d+\.(?:block\.)?net\.")
_BLOCKRES_WRAPPER = re.compile(r"\.conv1\.(?:conv\.)?net\.")


def read_structure(body):
    """Shift placement and temporal pool from the `.net` wrappers of the keys.

    `TemporalPool(layer2)` gives `layer2.net.*`; a shifted block `layerX.Y.net.*`
    (placement `block`); a shifted first conv `...conv1[.conv].net.*`
    (placement `blockres`); no shift wrapper is the TSN twin.
    """
    shift_wrapped = [
        key
        for key in body
        if (".net." in key or key.startswith("net."))
        and (not _POOL_WRAPPER.match(key) or key.count(".net.") > 1)
    ]
    if any(_BLOCK_WRAPPER.search(key) for key in shift_wrapped):
        place, shifted = "block", True
    elif any(_BLOCKRES_WRAPPER.search(key) for key in shift_wrapped):
        place, shifted = "blockres", True
    else:
        place, shifted = "blockres", False
    return {
        "shift_place": place,
        "shifted": shifted,
        "temporal_pool": any(_POOL_WRAPPER.match(key) for key in body),
        "backbone_options": {},
    }


def _spec(depth, keras_application):
    return BackboneSpec(
        name=f"resnet{depth}",
        builder=functools.partial(resnet_features, depth=depth),
        supports_non_local=True,
        supports_temporal_pool=True,
        options=("deploy",),
        fuse=fold_conv_batch_norms,
        deploy_options={"deploy": True},
        keras_application=keras_application,
        keras_name=keras_applications_name,
        torch_paths=TORCH_PATHS,
        torchvision_head_keys=TORCHVISION_HEAD_KEYS,
        recognizes=functools.partial(
            recognizes, stages=RESNET_STAGES[depth], bottleneck_blocks=True
        ),
        read_structure=read_structure,
    )


RESNET50 = _spec(50, keras.applications.ResNet50)
RESNET101 = _spec(101, keras.applications.ResNet101)
