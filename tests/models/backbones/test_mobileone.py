"""MobileOne TSM: block structure per variant, shift placement, the 8-in-16 quirk, complexity."""

import functools

import keras
import numpy as np
import pytest

from tsm_keras import TemporalShift, build_tsm, model_complexity
from tsm_keras.models.backbones import BACKBONES

from tests.models.backbones.folding_helpers import calibrate

SMALL = (32, 32, 3)
VARIANTS = ("s0", "s1", "s2", "s3", "s4")


def mobileone(variant="s4", num_classes=5, num_segments=4, input_shape=SMALL, **kwargs):
    keras.utils.set_random_seed(0)
    kwargs.setdefault("shift_place", "block")
    kwargs.setdefault("layout", "torch")
    return build_tsm(
        f"mobileone_{variant}",
        num_classes,
        num_segments=num_segments,
        input_shape=input_shape,
        **kwargs,
    )


@functools.lru_cache(maxsize=None)
def structure(variant):
    """A train-time model for read-only structure checks (built once per variant)."""
    return mobileone(variant)


def count(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.layers)


def consumers(model, tensor):
    """Names of the layers that take `tensor` as an input."""
    names = set()
    for layer in model.layers:
        for node in layer._inbound_nodes:
            if any(t is tensor for t in node.input_tensors):
                names.add(layer.name)
    return names


# ------------------------------------------------------------ architecture


def test_all_variants_are_registered_for_the_torch_layout_only():
    for variant in VARIANTS:
        assert BACKBONES[f"mobileone_{variant}"].layouts == ("torch",)
    with pytest.raises(ValueError, match="layouts"):
        build_tsm("mobileone_s4", 5, shift_place="block", layout="keras", input_shape=SMALL)


# Channels after the stem and after each stage (mmpretrain arch_zoo: width
# factors times (64, 128, 256, 512), stem min(64, 64 * w0)), worked out by hand.
STAGE_CHANNELS = {
    "s0": (48, 48, 128, 256, 1024),
    "s1": (64, 96, 192, 512, 1280),
    "s2": (64, 96, 256, 640, 2048),
    "s3": (64, 128, 320, 768, 2048),
    "s4": (64, 192, 448, 896, 2048),
}
LAST_BLOCK = (
    "stage0",
    "stage1_block1_pw",
    "stage2_block7_pw",
    "stage3_block9_pw",
    "stage4_block0_pw",
)


@pytest.mark.parametrize("variant", VARIANTS)
def test_stage_widths(variant):
    model = structure(variant)
    widths = tuple(model.get_layer(f"{name}_relu").output.shape[-1] for name in LAST_BLOCK)
    assert widths == STAGE_CHANNELS[variant]
    assert model.get_layer("avg_pool").input.shape[1:] == (1, 1, STAGE_CHANNELS[variant][-1])
    has_se = any("_se_" in layer.name for layer in model.layers)
    assert has_se == (variant == "s4")


# Layer counts derived by hand from mmpretrain's MobileOne: a stem block
# (conv + scale branch), 21 depthwise and 21 pointwise blocks; identity BN on
# the 17 stride-1 depthwise blocks and on pointwise blocks with in == out
# (17, plus stage1_block0_pw in S0 where 48 == 48); SE (2 convs) on 12 S4 blocks.
@pytest.mark.parametrize(
    "variant,conv2d,depthwise,batch_norm,add",
    [
        ("s0", 2 + 21 * 4, 21 * 5, 2 + 21 * 5 + 17 + 21 * 4 + 18, 1 + 21 + 21),
        ("s4", 2 + 21 + 24, 21 * 2, 2 + 21 * 2 + 17 + 21 + 17, 1 + 21 + 17),
    ],
)
def test_train_time_branch_counts(variant, conv2d, depthwise, batch_norm, add):
    model = structure(variant)
    assert count(model, keras.layers.DepthwiseConv2D) == depthwise
    full = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    assert len(full) == conv2d
    assert count(model, keras.layers.BatchNormalization) == batch_norm
    assert count(model, keras.layers.Add) == add


def test_block_branches_follow_mobileone_rules():
    model = structure("s0")
    names = {layer.name for layer in model.layers}
    # Stem: 3 -> 48, stride 2: one conv branch and the 1x1 scale branch, no identity.
    assert {"stage0_branch0_conv", "stage0_scale_conv"} <= names
    assert "stage0_branch1_conv" not in names and "stage0_identity_bn" not in names
    # Stride-2 depthwise: 4 kxk branches + scale, no identity; stride-1 adds identity.
    for index in range(4):
        conv = model.get_layer(f"stage2_block0_dw_branch{index}_conv")
        assert isinstance(conv, keras.layers.DepthwiseConv2D)
        assert conv.kernel_size == (3, 3) and conv.strides == (2, 2)
    assert "stage2_block0_dw_identity_bn" not in names
    assert "stage2_block1_dw_identity_bn" in names
    # Pointwise 1x1: no scale branch; identity only when channels are kept.
    assert model.get_layer("stage2_block0_pw_branch3_conv").kernel_size == (1, 1)
    assert not any(name.endswith("_pw_scale_conv") for name in names)
    assert "stage2_block0_pw_identity_bn" not in names  # 48 -> 128
    assert "stage2_block1_pw_identity_bn" in names
    assert "stage1_block0_pw_identity_bn" in names  # 48 -> 48
    # Symmetric padding (PyTorch padding=1) on stride-2 blocks, shared by the kxk branches.
    pad = model.get_layer("stage2_block0_dw_pad")
    assert pad.padding == ((1, 1), (1, 1))
    assert consumers(model, pad.output) == {f"stage2_block0_dw_branch{k}_conv" for k in range(4)}
    assert model.get_layer("stage0_branch0_bn").epsilon == 1e-5


def test_s4_squeeze_excitation_sits_on_the_last_blocks():
    model = structure("s4")
    se_blocks = {
        layer.name[: -len("_se_reduce")]
        for layer in model.layers
        if layer.name.endswith("_se_reduce")
    }
    expected = {f"stage3_block{j}_{kind}" for j in range(5, 10) for kind in ("dw", "pw")}
    expected |= {"stage4_block0_dw", "stage4_block0_pw"}
    assert se_blocks == expected
    # make_divisible(C // 16, 8): 896 -> 56, 2048 -> 128 (stage 3 is 896 wide after its first unit).
    assert model.get_layer("stage3_block5_dw_se_reduce").filters == 56
    assert model.get_layer("stage3_block5_dw_se_expand").filters == 896
    assert model.get_layer("stage3_block5_pw_se_reduce").filters == 56
    assert model.get_layer("stage4_block0_dw_se_reduce").filters == 56
    assert model.get_layer("stage4_block0_pw_se_reduce").filters == 128
    assert model.get_layer("stage4_block0_pw_se_expand").filters == 2048
    # Order inside a block: branches summed -> SE -> ReLU.
    assert consumers(model, model.get_layer("stage3_block5_dw_add").output) >= {
        "stage3_block5_dw_se_pool",
        "stage3_block5_dw_se_scale",
    }
    assert (
        model.get_layer("stage3_block5_dw_relu").input
        is model.get_layer("stage3_block5_dw_se_scale").output
    )


# ------------------------------------------------------------------ shifts


def test_every_block_but_the_stem_is_shifted_in_front_of_the_block():
    model = structure("s4")  # 4 segments
    shifts = [layer for layer in model.layers if isinstance(layer, TemporalShift)]
    # 42 blocks after the stem; the stem's 3 channels give fold 0
    # (MMAction2 wraps the stem too, a no-op).
    assert len(shifts) == 42
    for shift in shifts:
        block = shift.name[: -len("_shift")]
        assert shift.num_segments == 4 and shift.shift_div == 8
        # Every branch of the block reads the shifted input: nothing bypasses the shift.
        fed = consumers(model, shift.output)
        assert fed, block
        assert all(name.startswith(block + "_") for name in fed), fed
        assert shift.input is model.get_layer(_previous_relu(model, block)).output
    fed = consumers(model, model.get_layer("stage2_block1_dw_shift").output)
    assert fed == {
        "stage2_block1_dw_branch0_conv",
        "stage2_block1_dw_scale_conv",
        "stage2_block1_dw_identity_bn",
    }


def _previous_relu(model, block):
    names = [
        layer.name
        for layer in model.layers
        if layer.name.endswith("_relu") and "_se_" not in layer.name
    ]
    index = names.index(f"{block}_relu")
    return names[index - 1]


def test_blockres_placement_is_refused_and_tsn_twin_has_no_shift():
    with pytest.raises(ValueError, match=r"model.shift_place: expected one of the shift places of 'mobileone_s1' \['block'\]"):
        build_tsm("mobileone_s1", 5, layout="torch", input_shape=SMALL)
    twin = build_tsm("mobileone_s1", 5, layout="torch", input_shape=SMALL, shift=False)
    assert count(twin, TemporalShift) == 0


def test_resnet_only_options_are_refused():
    with pytest.raises(ValueError, match=r"model\.temporal_pool: expected null/false for backbone 'mobileone_s1'"):
        mobileone("s1", temporal_pool=True)


def test_shift_segments_reproduces_mmaction2_8_in_16_clips():
    """MMAction2 feeds 16 frames to a backbone built for 8: two independent halves."""
    clips = np.random.default_rng(1).normal(size=(2, 4) + SMALL).astype("float32")
    quirk = mobileone("s1", num_segments=4, backbone_options={"shift_segments": 2})
    calibrate(quirk, clips)
    half = mobileone("s1", num_segments=2)
    half.set_weights(quirk.get_weights())
    plain = mobileone("s1", num_segments=4)
    plain.set_weights(quirk.get_weights())
    logits = keras.ops.convert_to_numpy(quirk(clips, training=False))
    first = keras.ops.convert_to_numpy(half(clips[:, :2], training=False))
    second = keras.ops.convert_to_numpy(half(clips[:, 2:], training=False))
    plain_logits = keras.ops.convert_to_numpy(plain(clips, training=False))
    assert {layer.num_segments for layer in quirk.layers if isinstance(layer, TemporalShift)} == {2}
    assert quirk.tsm_config()["num_segments"] == 4
    scale = np.abs(logits).max()
    np.testing.assert_allclose(logits, (first + second) / 2, rtol=0, atol=1e-5 * scale)
    # Without the quirk information crosses frames 1 -> 2 and the logits differ.
    assert np.abs(plain_logits - logits).max() > 0.01 * scale


def test_shift_segments_must_divide_num_segments():
    with pytest.raises(ValueError, match="shift_segments"):
        mobileone("s1", num_segments=4, backbone_options={"shift_segments": 3})


# -------------------------------------------------------------- complexity


def test_complexity_reproduces_the_table_row_with_the_train_time_model():
    """K400 MobileOne-S4 1x1x16: 48.65 G FLOPs, 13.72 M params (400 classes; docs/reference.md#flops-and-parameters)."""
    train = mobileone("s4", num_classes=400, num_segments=16, input_shape=(224, 224, 3))
    figures = model_complexity(train)
    assert figures["flops"] == pytest.approx(48.65e9, rel=0.01)
    assert figures["params"] == pytest.approx(13.72e6, rel=0.01)
    deploy = mobileone(
        "s4",
        num_classes=400,
        num_segments=16,
        input_shape=(224, 224, 3),
        backbone_options={"deploy": True},
    )
    # The deploy model is not what the table measured: 2 % fewer FLOPs.
    assert model_complexity(deploy)["flops"] < 0.98 * 48.65e9


# The MobileOne paper's deploy models (ImageNet, 224x224, 1000 classes), as recorded in
# docs/reference.md#flops-and-parameters: params (M, rounded to 0.1) and MACs (M).
PAPER = {
    "s0": (2.1, 275),
    "s1": (4.8, 825),
    "s2": (7.8, 1299),
    "s3": (10.1, 1896),
    "s4": (14.8, 2978),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_deploy_complexity_matches_the_mobileone_paper(variant):
    deploy = mobileone(
        variant,
        num_classes=1000,
        num_segments=1,
        input_shape=(224, 224, 3),
        backbone_options={"deploy": True},
    )
    figures = model_complexity(deploy)
    params, macs = PAPER[variant]
    assert abs(figures["params"] / 1e6 - params) <= 0.05
    assert figures["flops"] / 1e6 == pytest.approx(macs, rel=0.01)
