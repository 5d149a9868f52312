"""ResNet-18/34 (basic blocks) with temporal hooks, in the PyTorch layout.

A basic block is two 3x3 conv + BN layers on the residual branch (the first
one strided), added to the shortcut (identity, or a strided 1x1 conv + BN
when the stride or the width changes), then ReLU; its output has `filters`
channels (expansion 1). Stages `(2, 2, 2, 2)` for ResNet-18 and
`(3, 4, 6, 3)` for ResNet-34, widths 64..512, the stem of `resnet.py`.

TSM places the shift as in the bottleneck networks: `blockres` shifts the
residual branch in front of its first conv (`conv1`), `block` the whole
block input; every block is shifted (stage 3 has fewer than 23 blocks).
MMAction2's `ResNetTSM` and mit-han-lab's `make_temporal_shift` do exactly
this for basic blocks (both wrap `conv1`, docs/reference.md#shift-placement), so the PyTorch key paths are those
of `resnet.py` without `conv3` / `bn3`: `backbone.layer2.0.conv1.conv.net.weight`
(MMAction2), `module.base_model.layer2.0.conv1.net.weight` (mit-han-lab),
`layer2.0.conv1.weight` (torchvision ImageNet).

Only the `"torch"` layout exists: `keras.applications` has no ResNet-18/34,
their ImageNet weights are torchvision's. Non-local blocks are not offered:
MMAction2 sizes them from a bottleneck's `conv3`, which a basic block lacks.

Layer names: `layer{stage}_block{index}_conv{1,2}`, `..._bn{1,2}`,
`..._downsample_conv`, `..._downsample_bn`, `..._shift`, as in `resnet.py`.
"""

import functools

import keras

from tsm_keras.models.backbones import resnet
from tsm_keras.models.backbones.base import BackboneSpec
from tsm_keras.models.backbones.folding import fold_conv_batch_norms
from tsm_keras.models.layout import get_layout

BASIC_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
BASIC_EXPANSION = 1


def basic_block(x, filters, stride, downsample, shift, name, layout, context):
    """ResNet basic block; `shift` says whether this block is temporal."""
    momentum = context.bn_momentum
    shortcut, branch = resnet.residual_inputs(
        x, filters, stride, downsample, shift, name, layout, context
    )
    branch = layout.conv(branch, filters, 3, stride, name=f"{name}_conv1")
    branch = layout.batch_norm(branch, f"{name}_bn1", momentum)
    branch = keras.layers.ReLU(name=f"{name}_relu1")(branch)
    branch = layout.conv(branch, filters, 3, 1, name=f"{name}_conv2")
    branch = layout.batch_norm(branch, f"{name}_bn2", momentum)
    return resnet.residual_output(shortcut, branch, name)


def resnet_basic_features(frames, context, layout="torch", depth=18, deploy=False):
    """ResNet-18/34 trunk on `(N*T, H, W, 3)` frames.

    Args:
        frames: KerasTensor `(N*T, H, W, 3)`.
        context: `TemporalContext` deciding shifts and the temporal pool.
        layout: `"torch"`.
        depth: 18 or 34.
        deploy: bool, the deploy form (BatchNormalization folded into the convs).

    Returns:
        `(512-channel stage-4 map, num_segments after the temporal pool)`.
    """
    if depth not in BASIC_STAGES:
        raise ValueError(f"ResNet depth must be one of {sorted(BASIC_STAGES)}, got {depth}")
    layout = get_layout(
        layout, keras_bn_epsilon=1e-5, keras_conv_bias=False, fold_batch_norm=bool(deploy)
    )
    return resnet.resnet_trunk(
        frames,
        context,
        layout,
        BASIC_STAGES[depth],
        basic_block,
        BASIC_EXPANSION,
        non_local_blocks={},
    )


def _spec(depth):
    return BackboneSpec(
        name=f"resnet{depth}",
        builder=functools.partial(resnet_basic_features, depth=depth),
        layouts=("torch",),
        supports_temporal_pool=True,
        torch_paths=resnet.TORCH_PATHS,
        torchvision_head_keys=resnet.TORCHVISION_HEAD_KEYS,
        recognizes=functools.partial(
            resnet.recognizes, stages=BASIC_STAGES[depth], bottleneck_blocks=False
        ),
        read_structure=resnet.read_structure,
        options=("deploy",),
        fuse=fold_conv_batch_norms,
        deploy_options={"deploy": True},
    )


RESNETS_BASIC = (_spec(18), _spec(34))
