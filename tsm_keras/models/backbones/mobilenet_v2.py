"""MobileNetV2 (width 1.0) with temporal hooks, in the Keras and the PyTorch layout.

Layer names: `stem_conv`, `stem_bn`, `block{i}_expand_conv`, `block{i}_expand_bn`,
`block{i}_depthwise_conv`, `block{i}_depthwise_bn`, `block{i}_project_conv`,
`block{i}_project_bn`, `block{i}_shift`, `last_conv`, `last_bn`, with `i` the
global inverted-residual index 0..16 (`features.{i+1}` in torchvision,
`block_{i}` in `keras.applications`).

PyTorch key paths (`block2_expand_conv`, shifted):

| family        | module path              | layout                                   |
|---------------|--------------------------|------------------------------------------|
| `mmaction2`   | `layer2.1.conv.0.net.conv` | stages `layer1..7` of mmcv `ConvModule`s, `TemporalShift` wraps the expansion ConvModule; stem `conv1`, last `conv2` |
| `mit`         | `features.3.conv.0.net`  | flat `conv` Sequential (conv, bn, relu6 per part), `TemporalShift` wraps the expansion conv |
| `mit_online`  | `features.3.conv.0`      | as `mit`, shift buffers instead of wrappers |
| `torchvision` | `features.3.conv.0.0`    | `Conv2dNormActivation` per part, then the projection conv and BN |

Only the `blockres` shift exists in these checkpoints.
"""

import functools
import re

import keras

from tsm_keras.models.backbones.base import BackboneSpec
from tsm_keras.models.backbones.folding import fold_conv_batch_norms
from tsm_keras.models.layout import get_layout
from tsm_keras.weights.key_maps import UnsupportedArchitectureError

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
        branch = layout.relu(branch, f"{name}_expand_relu", max_value=6.0, pad_for=(3, stride))
    branch = layout.depthwise_conv(branch, 3, stride, name=f"{name}_depthwise_conv")
    branch = layout.batch_norm(branch, f"{name}_depthwise_bn", momentum)
    branch = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(branch)
    branch = layout.conv(branch, out_channels, 1, name=f"{name}_project_conv")
    branch = layout.batch_norm(branch, f"{name}_project_bn", momentum)
    if residual:
        return keras.layers.Add(name=f"{name}_add")([x, branch])
    return branch


def mobilenet_v2_features(frames, context, layout="keras", deploy=False):
    """MobileNetV2 trunk on `(N*T, H, W, 3)` frames.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext` deciding the shifts.
        layout: `"keras"` or `"torch"` (see `tsm_keras.models.layout`).
        deploy: bool, the deploy form: every BatchNormalization folded into
            the conv before it (`tsm_keras.reparameterize` fills it).

    Returns:
        `(1280-channel feature map, context.num_segments)`.
    """
    layout = get_layout(
        layout, keras_bn_epsilon=1e-3, keras_conv_bias=False, fold_batch_norm=bool(deploy)
    )
    momentum = context.bn_momentum
    x = layout.conv(frames, STEM_CHANNELS, 3, 2, name="stem_conv")
    x = layout.batch_norm(x, "stem_bn", momentum)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for index, expansion, _, out_channels, stride in block_settings():
        x = inverted_residual(x, expansion, out_channels, stride, index, layout, context)
    x = layout.conv(x, LAST_CHANNELS, 1, name="last_conv")
    x = layout.batch_norm(x, "last_bn", momentum)
    return keras.layers.ReLU(6.0, name="last_relu")(x), context.num_segments


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


# -- PyTorch checkpoints ----------------------------------------------------------

_BLOCK_LAYER = re.compile(r"block(\d+)_(expand|depthwise|project)_(conv|bn)$")
_FIXED_PATHS = {
    "mmaction2": {
        "stem_conv": "conv1.conv",
        "stem_bn": "conv1.bn",
        "last_conv": "conv2.conv",
        "last_bn": "conv2.bn",
    },
    "features": {
        "stem_conv": "features.0.0",
        "stem_bn": "features.0.1",
        "last_conv": "features.18.0",
        "last_bn": "features.18.1",
    },
}


def _parse_block_layer(name):
    """`(block index, part, "conv" or "bn")` of a block layer name, or None."""
    match = _BLOCK_LAYER.match(name)
    return None if match is None else (int(match.group(1)), match.group(2), match.group(3))


def block_parts(index):
    """The parts of block `index` in order (no expansion when its factor is 1)."""
    expansion = block_settings()[index][1]
    return ("expand", "depthwise", "project") if expansion != 1 else ("depthwise", "project")


def stage_position(index):
    """`(stage 1..7, position)` of global inverted-residual block `index`."""
    position = index
    for stage, (_, _, repeats, _) in enumerate(INVERTED_RESIDUAL_SETTINGS, start=1):
        if position < repeats:
            return stage, position
        position -= repeats
    raise ValueError(f"MobileNetV2 has no block {index}")


def _shift_wrapped(index, part, kind, structure, family, wraps_shifts):
    """Whether the family's `TemporalShift` wraps this layer (the expansion conv)."""
    shifted = structure.shifts and structure.has(f"block{index}_shift")
    if shifted and structure.shift_place != "blockres":
        raise UnsupportedArchitectureError(
            f"{family} MobileNetV2 checkpoints only have the 'blockres' shift "
            "(before the expansion conv)"
        )
    return wraps_shifts and shifted and part == "expand" and kind == "conv"


def mmaction2_path(name, structure):
    """MMAction2 `MobileNetV2TSM`: `layer{stage}.{i}.conv.{part}.{conv,bn}`."""
    if name in _FIXED_PATHS["mmaction2"]:
        return _FIXED_PATHS["mmaction2"][name]
    parsed = _parse_block_layer(name)
    if parsed is None:
        return None
    index, part, kind = parsed
    stage, position = stage_position(index)
    path = f"layer{stage}.{position}.conv.{block_parts(index).index(part)}"
    if _shift_wrapped(index, part, "conv", structure, "mmaction2", True):
        path += ".net"  # TemporalShift wraps the whole ConvModule
    return f"{path}.{kind}"


def mit_path(name, structure, family="mit", wraps_shifts=True):
    """mit-han-lab (and its online demo): flat `features.{i+1}.conv.{position}`."""
    if name in _FIXED_PATHS["features"]:
        return _FIXED_PATHS["features"][name]
    parsed = _parse_block_layer(name)
    if parsed is None:
        return None
    index, part, kind = parsed
    # Flat Sequential: conv, bn, relu6 per part.
    position = 3 * block_parts(index).index(part) + (0 if kind == "conv" else 1)
    path = f"features.{index + 1}.conv.{position}"
    if _shift_wrapped(index, part, kind, structure, family, wraps_shifts):
        path += ".net"
    return path


def torchvision_path(name, structure):
    """torchvision: `Conv2dNormActivation(conv, bn, relu6)` per part, then conv, bn."""
    if name in _FIXED_PATHS["features"]:
        return _FIXED_PATHS["features"][name]
    parsed = _parse_block_layer(name)
    if parsed is None:
        return None
    index, part, kind = parsed
    activated = block_parts(index)[:-1]
    if part in activated:
        path = f"conv.{activated.index(part)}.{0 if kind == 'conv' else 1}"
    else:
        path = f"conv.{len(activated) + (0 if kind == 'conv' else 1)}"
    return f"features.{index + 1}.{path}"


def recognizes(body):
    """MMAction2's stages go to `layer7` (last conv `conv2`); the others have `features.18`."""
    return any(key.startswith(("layer7.", "features.18.", "conv2.conv.")) for key in body)


def read_structure(body):
    """Shifted when any `.net` wrapper exists; the placement is always `blockres`."""
    shifted = any(".net." in key or key.startswith("net.") for key in body)
    return {
        "shift_place": "blockres",
        "shifted": shifted,
        "temporal_pool": False,
        "backbone_options": {},
    }


MOBILENET_V2 = BackboneSpec(
    name="mobilenet_v2",
    builder=mobilenet_v2_features,
    keras_application=keras.applications.MobileNetV2,
    keras_name=keras_applications_name,
    torch_paths={
        "mmaction2": mmaction2_path,
        "mit": mit_path,
        "mit_online": functools.partial(mit_path, family="mit_online", wraps_shifts=False),
        "torchvision": torchvision_path,
    },
    torchvision_head_keys=("classifier.1.weight", "classifier.1.bias"),
    recognizes=recognizes,
    read_structure=read_structure,
    options=("deploy",),
    fuse=fold_conv_batch_norms,
    deploy_options={"deploy": True},
)
