"""MobileOne S0..S4 (Vasu et al., CVPR 2023) with temporal hooks, in the PyTorch layout.

The network follows mmpretrain's `MobileOne` (which MMAction2's `MobileOneTSM`
subclasses) block for block: a stem block `stage0` (3x3, stride 2, one conv
branch, `min(64, 64 * width[0])` channels), then four stages of
`num_blocks = (2, 8, 10, 1)` units, each unit a depthwise 3x3 MobileOneBlock
(stride 2 in the first unit of a stage) followed by a pointwise 1x1
MobileOneBlock. S4 puts squeeze-excitation (mmpretrain `SELayer`, ratio 16,
squeeze channels `make_divisible(C // 16, 8)`, ReLU then sigmoid) into both
blocks of the last 5 units of stage 3 and of the unit of stage 4.

Train-time block (`deploy=False`), summed, then SE (if any), then ReLU:
- `num_conv_branches` kxk conv + BN branches;
- a 1x1 "scale" conv + BN branch when k > 1;
- an identity BN branch when `in == out` channels and stride 1.
Deploy block (`deploy=True`): one kxk conv with bias (the branches folded by
`fuse_block`, through `tsm_keras.models.reparameterize.reparameterize`), then
SE, then ReLU.

Only `layout="torch"` exists (symmetric zero padding on stride-2 convs, no
bias on branch convs, BN epsilon 1e-5): MobileOne has no `keras.applications`
weights, its weights come from PyTorch checkpoints.

TSM (MMAction2 `MobileOneTSM`): the temporal shift wraps every MobileOneBlock
(placement `"block"`, the shift in front of the block), so that
reparameterization still folds each block into one conv. Placement
`"blockres"` has no meaning here and is refused. MMAction2 also wraps the stem
block, whose 3 input channels give `fold = 3 // shift_div = 0` (no channel
moves) for `shift_div > 3` (the default is 8); the stem gets a shift layer only when its fold
is non-zero.

Backbone options (`build_tsm(..., backbone_options={...})`):
- `deploy`: bool, build the reparameterized (single-conv) blocks.
- `shift_segments`: int or None, the clip length the shifts assume. None (the
  default) means the model's `num_segments`. MMAction2's MobileOne-S4 1x1x16
  config feeds 16 frames to a backbone built with `num_segments=8` (only the
  head has 16), so its shifts treat each 16-frame clip as two clips of 8
  frames: no information crosses frames 7 -> 8. `shift_segments=8` with
  `num_segments=16` reproduces that network exactly (for its checkpoint).
  Per-frame (online) contexts ignore it: a stream has no clip boundaries.

Layer names (mmpretrain module path on the right; MMAction2 TSM checkpoints
prefix it with `backbone.` and put `.net` after the block path, because
`TemporalShift` wraps the block: `backbone.stage1.0.net.branch_scale.conv.weight`,
`backbone.stage0.net...` for the stem too; mmpretrain ImageNet checkpoints have
no `.net`):

| block                     | module path         |
|---------------------------|---------------------|
| `stage0`                  | `stage0`            |
| `stage{i}_block{j}_dw`    | `stage{i}.{2j}`     |
| `stage{i}_block{j}_pw`    | `stage{i}.{2j+1}`   |

and, for a block named `B` with module path `P` (BN weights are gamma, beta,
moving mean, moving variance <- `weight, bias, running_mean, running_var`):

| Keras layer                  | PyTorch keys                                   |
|------------------------------|------------------------------------------------|
| `B_branch{k}_conv` (kernel)  | `P.branch_conv_list.{k}.conv.weight`           |
| `B_branch{k}_bn`             | `P.branch_conv_list.{k}.norm.*`                |
| `B_scale_conv` (kernel)      | `P.branch_scale.conv.weight`                   |
| `B_scale_bn`                 | `P.branch_scale.norm.*`                        |
| `B_identity_bn`              | `P.branch_norm.*`                              |
| `B_se_reduce` (kernel, bias) | `P.se.conv1.conv.{weight,bias}`                |
| `B_se_expand` (kernel, bias) | `P.se.conv2.conv.{weight,bias}`                |
| `B_reparam_conv` (deploy)    | `P.branch_reparam.{weight,bias}`               |

Other layers: `B_shift` (TemporalShift), `B_pad` (ZeroPadding2D of stride-2
blocks, shared by all kxk branches), `B_add`, `B_se_pool`, `B_se_relu`,
`B_se_sigmoid`, `B_se_scale`, `B_relu`. Kernel layouts: the depthwise blocks
(`_dw`) are `DepthwiseConv2D`, PyTorch `[C, 1, k, k]` -> Keras `[k, k, C, 1]`;
the others are `Conv2D`, `[O, I, k, k]` -> `[k, k, I, O]` (SE convs too).
"""

import dataclasses
import functools
import re

import keras
import numpy as np

from tsm_keras.layers.temporal_shift import shift_fold
from tsm_keras.models.backbones.base import BackboneSpec
from tsm_keras.models.backbones.folding import fold_batch_norm, identity_kernel
from tsm_keras.models.layout import get_layout

# mmpretrain `MobileOne.arch_zoo`.
ARCHITECTURES = {
    "s0": dict(
        width_factor=(0.75, 1.0, 1.0, 2.0),
        num_conv_branches=(4, 4, 4, 4),
        num_se_blocks=(0, 0, 0, 0),
    ),
    "s1": dict(
        width_factor=(1.5, 1.5, 2.0, 2.5),
        num_conv_branches=(1, 1, 1, 1),
        num_se_blocks=(0, 0, 0, 0),
    ),
    "s2": dict(
        width_factor=(1.5, 2.0, 2.5, 4.0),
        num_conv_branches=(1, 1, 1, 1),
        num_se_blocks=(0, 0, 0, 0),
    ),
    "s3": dict(
        width_factor=(2.0, 2.5, 3.0, 4.0),
        num_conv_branches=(1, 1, 1, 1),
        num_se_blocks=(0, 0, 0, 0),
    ),
    "s4": dict(
        width_factor=(3.0, 3.5, 3.5, 4.0),
        num_conv_branches=(1, 1, 1, 1),
        num_se_blocks=(0, 0, 5, 1),
    ),
}
NUM_BLOCKS = (2, 8, 10, 1)
BASE_CHANNELS = (64, 128, 256, 512)
SE_RATIO = 16
SE_DIVISOR = 8


def make_divisible(value, divisor, min_value=None, min_ratio=0.9):
    """Rounds `value` to a multiple of `divisor` (mmpretrain's `make_divisible`)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < min_ratio * value:
        rounded += divisor
    return rounded


@dataclasses.dataclass(frozen=True)
class BlockSetting:
    """One MobileOneBlock of a variant.

    Args:
        name: Keras layer-name prefix (`stage0`, `stage{i}_block{j}_{dw,pw}`).
        module_path: the block's mmpretrain module path (`stage0`, `stage{i}.{m}`).
        in_channels: int.
        out_channels: int.
        kernel_size: int, 3 (stem and depthwise) or 1 (pointwise).
        stride: int.
        depthwise: bool, a per-channel conv (`groups = in_channels`).
        num_conv_branches: int, kxk conv + BN branches.
        se_channels: int, squeeze channels of the SE layer, 0 without SE.
    """

    name: str
    module_path: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    depthwise: bool
    num_conv_branches: int
    se_channels: int = 0

    @property
    def has_scale(self):
        """A 1x1 conv + BN branch exists (kernel_size > 1)."""
        return self.kernel_size > 1

    @property
    def has_identity(self):
        """A BN-only identity branch exists (same channels, stride 1)."""
        return self.in_channels == self.out_channels and self.stride == 1


def block_settings(variant):
    """The `BlockSetting`s of MobileOne `variant` ("s0".."s4"), stem first."""
    if variant not in ARCHITECTURES:
        raise ValueError(
            f"MobileOne variant must be one of {sorted(ARCHITECTURES)}, got {variant!r}"
        )
    arch = ARCHITECTURES[variant]
    channels = min(64, int(BASE_CHANNELS[0] * arch["width_factor"][0]))
    settings = [BlockSetting("stage0", "stage0", 3, channels, 3, 2, False, 1)]
    for stage, num_blocks in enumerate(NUM_BLOCKS):
        planes = int(BASE_CHANNELS[stage] * arch["width_factor"][stage])
        branches = arch["num_conv_branches"][stage]
        first_se = num_blocks - arch["num_se_blocks"][stage]
        for block in range(num_blocks):
            use_se = block >= first_se
            prefix = f"stage{stage + 1}_block{block}"
            path = f"stage{stage + 1}"
            settings.append(
                BlockSetting(
                    f"{prefix}_dw",
                    f"{path}.{2 * block}",
                    channels,
                    channels,
                    3,
                    2 if block == 0 else 1,
                    True,
                    branches,
                    _se_channels(channels) if use_se else 0,
                )
            )
            settings.append(
                BlockSetting(
                    f"{prefix}_pw",
                    f"{path}.{2 * block + 1}",
                    channels,
                    planes,
                    1,
                    1,
                    False,
                    branches,
                    _se_channels(planes) if use_se else 0,
                )
            )
            channels = planes
    return tuple(settings)


def _se_channels(channels):
    return make_divisible(channels // SE_RATIO, SE_DIVISOR)


def _conv(x, setting, kernel_size, use_bias, name):
    """The conv of one branch: depthwise or full, `valid` on pre-padded input."""
    padding = "same" if kernel_size > 1 and setting.stride == 1 else "valid"
    if setting.depthwise:
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=setting.stride, padding=padding, use_bias=use_bias, name=name
        )(x)
    return keras.layers.Conv2D(
        setting.out_channels,
        kernel_size,
        strides=setting.stride,
        padding=padding,
        use_bias=use_bias,
        name=name,
    )(x)


def squeeze_excitation(x, channels, name):
    """mmpretrain `SELayer`: `x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)`."""
    scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    scale = keras.layers.Conv2D(channels, 1, name=f"{name}_se_reduce")(scale)
    scale = keras.layers.ReLU(name=f"{name}_se_relu")(scale)
    scale = keras.layers.Conv2D(x.shape[-1], 1, name=f"{name}_se_expand")(scale)
    scale = keras.layers.Activation("sigmoid", name=f"{name}_se_sigmoid")(scale)
    return keras.layers.Multiply(name=f"{name}_se_scale")([x, scale])


def mobileone_block(x, setting, layout, momentum, deploy=False):
    """One MobileOneBlock (train-time branches or its deploy-time single conv).

    Args:
        x: KerasTensor `(N*T, H, W, setting.in_channels)`.
        setting: `BlockSetting`.
        layout: `Layout` (BN epsilon).
        momentum: float, Keras BatchNorm momentum.
        deploy: bool, one kxk conv with bias instead of the branches.
    """
    name = setting.name
    kernel_size = setting.kernel_size
    padded = x
    if kernel_size > 1 and setting.stride > 1:
        padded = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    if deploy:
        out = _conv(padded, setting, kernel_size, True, f"{name}_reparam_conv")
    else:
        branches = []
        for index in range(setting.num_conv_branches):
            branch = _conv(padded, setting, kernel_size, False, f"{name}_branch{index}_conv")
            branches.append(layout.batch_norm(branch, f"{name}_branch{index}_bn", momentum))
        if setting.has_scale:
            branch = _conv(x, setting, 1, False, f"{name}_scale_conv")
            branches.append(layout.batch_norm(branch, f"{name}_scale_bn", momentum))
        if setting.has_identity:
            branches.append(layout.batch_norm(x, f"{name}_identity_bn", momentum))
        out = branches[0]
        if len(branches) > 1:
            out = keras.layers.Add(name=f"{name}_add")(branches)
    if setting.se_channels:
        out = squeeze_excitation(out, setting.se_channels, name)
    return keras.layers.ReLU(name=f"{name}_relu")(out)


def mobileone_features(
    frames, context, layout="torch", variant="s4", deploy=False, shift_segments=None
):
    """MobileOne trunk on `(N*T, H, W, 3)` frames.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext`; its `shift_place` must be `"block"`.
        layout: `"torch"` (the only one).
        variant: `"s0"` .. `"s4"`.
        deploy: bool, reparameterized blocks (one conv each).
        shift_segments: int or None, clip length the shifts assume (None:
            `context.num_segments`; 8 with 16 frames reproduces MMAction2's
            MobileOne-S4 1x1x16 config, see the module docstring).

    Returns:
        `(last stage's feature map, context.num_segments)`: the clips keep
        their length, whatever the shifts assume.
    """
    layout = get_layout(layout, keras_bn_epsilon=1e-5, keras_conv_bias=False)
    shift_context = context
    # A per-frame context (one segment, e.g. the online one) has no clip
    # boundaries to reproduce: the option only concerns clips.
    if shift_segments is not None and context.num_segments > 1:
        shift_segments = int(shift_segments)
        if shift_segments < 1 or context.num_segments % shift_segments:
            raise ValueError(
                f"backbone option shift_segments must divide "
                f"num_segments={context.num_segments}, got {shift_segments}"
            )
        shift_context = context.with_segments(shift_segments)
    x = frames
    for setting in block_settings(variant):
        if shift_fold(x.shape[-1], context.shift_div):
            x = shift_context.shift(x, name=f"{setting.name}_shift")
        x = mobileone_block(x, setting, layout, context.bn_momentum, deploy=bool(deploy))
    return x, context.num_segments


VARIANTS = tuple(sorted(ARCHITECTURES))


# -- reparameterization ---------------------------------------------------------


def fuse_block(layers, setting):
    """Kernel and bias of the single conv equal to one train-time block.

    Args:
        layers: dict layer name -> layer of the train-time model.
        setting: the block's `BlockSetting`.

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


def fuse(layers, variant):
    """`{block_reparam_conv: (kernel, bias)}` for every block of a train-time model."""
    return {
        f"{setting.name}_reparam_conv": fuse_block(layers, setting)
        for setting in block_settings(variant)
    }


# -- PyTorch checkpoints ----------------------------------------------------------

_LAYER = re.compile(
    r"(stage0|stage(\d)_block(\d+)_(dw|pw))_"
    r"(branch(\d+)_(conv|bn)|scale_(conv|bn)|identity_bn|se_reduce|se_expand|reparam_conv)$"
)
_PART_PATHS = {
    "scale_conv": "branch_scale.conv",
    "scale_bn": "branch_scale.norm",
    "identity_bn": "branch_norm",
    "se_reduce": "se.conv1.conv",
    "se_expand": "se.conv2.conv",
    "reparam_conv": "branch_reparam",
}


def mmaction2_path(name, structure):
    """MMAction2 `MobileOneTSM` module path of Keras layer `name` (see the module docstring)."""
    match = _LAYER.match(name)
    if not match:
        return None
    block, stage, unit, kind, part = (match.group(i) for i in range(1, 6))
    if block == "stage0":
        path = "stage0"
    else:
        path = f"stage{stage}.{2 * int(unit) + (0 if kind == 'dw' else 1)}"
    if structure.shifts:  # MobileOneTSM wraps every block, the stem included
        path += ".net"
    if part.startswith("branch"):
        return f"{path}.branch_conv_list.{match.group(6)}." + (
            "conv" if match.group(7) == "conv" else "norm"
        )
    return f"{path}.{_PART_PATHS[part]}"


def recognizes(body, variant):
    """Whether the keys hold MobileOne `variant`: a `stage0`, and every block's width and branches.

    Each block's first conv (its `branch_reparam` in the deploy form, else
    `branch_conv_list.0`) must have the variant's output channels, and a
    train-time block the variant's number of conv branches.
    """
    if not any(key.startswith("stage0.") for key in body):
        return False
    for setting in block_settings(variant):
        for path in (f"{setting.module_path}.net.", f"{setting.module_path}."):
            reparam = body.get(path + "branch_reparam.weight")
            branch = body.get(path + "branch_conv_list.0.conv.weight")
            found = reparam if reparam is not None else branch
            if found is not None:
                break
        else:
            return False
        if found.shape[0] != setting.out_channels:
            return False
        if reparam is None:
            branches = sum(1 for k in range(8) if f"{path}branch_conv_list.{k}.conv.weight" in body)
            if branches != setting.num_conv_branches:
                return False
    return True


def read_structure(body):
    """Shifted when the blocks are wrapped (`.net`); deploy form when `branch_reparam` exists."""
    return {
        "shift_place": "block",
        "shifted": any(".net." in key or key.startswith("net.") for key in body),
        "temporal_pool": False,
        "backbone_options": {"deploy": any(".branch_reparam." in key for key in body)},
    }


def _spec(variant):
    return BackboneSpec(
        name=f"mobileone_{variant}",
        builder=functools.partial(mobileone_features, variant=variant),
        layouts=("torch",),
        shift_places=("block",),
        # MMAction2's MobileOne-S4 recipe samples 16 frames (1x1x16).
        default_num_segments=16,
        options=("deploy", "shift_segments"),
        torch_paths={"mmaction2": mmaction2_path},
        recognizes=functools.partial(recognizes, variant=variant),
        read_structure=read_structure,
        fuse=functools.partial(fuse, variant=variant),
        deploy_options={"deploy": True},
        shift_place_reason=(
            " (the shift in front of each MobileOneBlock, as MMAction2's MobileOneTSM, so "
            "that reparameterization folds every block into one conv)"
        ),
    )


MOBILEONE = tuple(_spec(variant) for variant in VARIANTS)
