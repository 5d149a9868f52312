"""Logit parity between PyTorch reference TSMs and their imported Keras twins.

Each case builds an independent PyTorch network (`torch_reference.py`) in one
checkpoint family's module layout, fills it with random weights and random
BatchNorm statistics, saves it as that family saves checkpoints, imports the
file with `tsm_keras.convert` and compares logits on the same random clip:
`max|keras - torch| / max|torch| <= 1e-4`, for batch 1 and batch 2. Odd and
even frame sizes exercise the symmetric padding of stride-2 convolutions.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests import torch_reference as ref  # noqa: E402
from tests.convert.parity import (  # noqa: E402
    TOLERANCE,
    assert_clip_parity,
    make_reference,
    random_clip,
    relative_difference,
    save_mit,
    save_mmaction2,
    to_torch,
)

from tsm_keras.export import build_online  # noqa: E402
from tsm_keras.convert import import_torch_checkpoint, load_torch_checkpoint  # noqa: E402

MMACTION2_RESNET_CASES = {
    # name: (depth, size, segments, extra backbone args)
    "r50": (50, 64, 4, {}),
    "r101": (101, 65, 4, {}),
    "r50_block_temporal_pool": (50, 65, 4, {"shift_place": "block", "temporal_pool": True}),
}


@pytest.mark.parametrize(
    "case",
    [
        "r50",
        pytest.param("r101", marks=pytest.mark.slow),
        pytest.param("r50_block_temporal_pool", marks=pytest.mark.slow),
    ],
)
def test_mmaction2_resnet_logits_match(case, tmp_path):
    depth, size, segments, options = MMACTION2_RESNET_CASES[case]
    out_segments = segments // 2 if options.get("temporal_pool") else segments
    network = ref.MMRecognizer(
        ref.MMResNetTSM(depth, num_segments=segments, **options), 2048, 7, out_segments
    )
    clip = random_clip(2, segments, size, seed=depth)
    make_reference(network, clip, seed=depth)
    path = tmp_path / f"tsm_imagenet-pretrained-r{depth}_8xb16-1x1x{segments}-50e_sthv2-rgb.pth"
    save_mmaction2(network, path)
    imported = import_torch_checkpoint(path, input_shape=(size, size, 3))
    config = imported.spec.to_dict()
    assert config["backbone"] == f"resnet{depth}" and config["num_classes"] == 7
    assert config["num_segments"] == segments and imported.inferred["num_segments"] == "file name"
    assert config["shift_place"] == options.get("shift_place", "blockres")
    assert config["temporal_pool"] == options.get("temporal_pool", False)
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    assert len(imported.dropped) == batch_norms  # num_batches_tracked, one per BatchNorm
    assert_clip_parity(imported.model, network, clip)


@pytest.mark.parametrize(
    "mode,size,hint",
    [
        ("dot_product", 64, "config"),
        ("gaussian", 65, None),
        ("embedded_gaussian", 65, "file name"),
    ],
)
def test_mmaction2_resnet50_non_local_logits_match(mode, size, hint, tmp_path):
    segments = 4
    network = ref.MMRecognizer(ref.MMResNetTSM(50, num_segments=segments, non_local=mode), 2048, 5)
    clip = random_clip(2, segments, size, seed=3)
    ref.randomize(network, seed=7)  # the Non-local BatchNorm too: not the identity
    # Keep the softmax over raw dot products well conditioned in float32 (see the helpers).
    if mode == "gaussian":
        ref.scale_residual_stream(network, 0.1)
    else:
        ref.scale_non_local(network, 0.3)
    ref.calibrate_batch_norms(network, lambda: network(to_torch(clip)), seed=7)
    with torch.no_grad():  # the reference itself: float32 agrees with float64
        single = network(to_torch(clip)).numpy()
        double = copy.deepcopy(network).double()(to_torch(clip).double()).numpy()
    assert relative_difference(single, double) < 0.5 * TOLERANCE
    name = "checkpoint.pth"
    config_text = None
    if hint == "config":
        config_text = (
            "model = dict(type='Recognizer2D', backbone=dict(type='ResNetTSM', depth=50, "
            f"num_segments={segments}, non_local=((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), "
            f"(0, 0, 0)), non_local_cfg=dict(sub_sample=True, use_scale=False, "
            f"norm_cfg=dict(type='BN3d', requires_grad=True), mode='{mode}')), "
            f"cls_head=dict(type='TSMHead', num_segments={segments}, num_classes=5))"
        )
    elif hint == "file name":
        name = f"tsm_imagenet-pretrained-r50-nl-{mode.replace('_', '-')}_8xb16-1x1x{segments}-50e_kinetics400-rgb.pth"
    save_mmaction2(network, tmp_path / name, config_text)
    kwargs = {} if hint else {"num_segments": segments}
    imported = import_torch_checkpoint(tmp_path / name, input_shape=(size, size, 3), **kwargs)
    assert imported.spec.non_local == mode
    assert_clip_parity(imported.model, network, clip)


@pytest.mark.parametrize("is_shift,size", [(True, 65), (False, 64)])
def test_mmaction2_mobilenet_v2_logits_match(is_shift, size, tmp_path):
    segments = 4
    network = ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=segments, is_shift=is_shift), 1280, 6)
    clip = random_clip(2, segments, size, seed=5)
    make_reference(network, clip, seed=11)
    path = tmp_path / "mobilenet_v2.pth"
    save_mmaction2(network, path)
    imported = import_torch_checkpoint(path, num_segments=segments, input_shape=(size, size, 3))
    assert imported.spec.backbone == "mobilenet_v2"
    assert imported.spec.shift_div == (8 if is_shift else 0)  # no .net: the TSN twin
    assert_clip_parity(imported.model, network, clip)


@pytest.mark.parametrize("place,size", [("blockres", 65), pytest.param("block", 64, marks=pytest.mark.slow)])
def test_mit_resnet50_logits_match(place, size, tmp_path):
    segments = 4
    network = ref.mit_resnet_tsn(50, segments, 9, place=place)
    clip = random_clip(2, segments, size, seed=9)
    make_reference(network, clip, seed=13)
    path = tmp_path / f"TSM_kinetics_RGB_resnet50_shift8_{place}_avg_segment{segments}_e50.pth"
    save_mit(network, path)
    imported = import_torch_checkpoint(path, input_shape=(size, size, 3))
    assert imported.source == "mit" and imported.spec.shift_place == place
    assert imported.spec.num_segments == segments
    assert_clip_parity(imported.model, network, clip)


def test_mit_mobilenet_v2_logits_match(tmp_path):
    segments, size = 4, 64
    network = ref.mit_mobilenet_v2_tsn(segments, 174)
    clip = random_clip(2, segments, size, seed=19)
    make_reference(network, clip, seed=17)
    path = tmp_path / f"TSM_something_RGB_mobilenetv2_shift8_blockres_avg_segment{segments}_e25.pth"
    # Released 2019 files predate PyTorch's zip format: save in the legacy one.
    torch.save({"epoch": 25, "arch": "mobilenetv2", "state_dict": network.state_dict()}, path, _use_new_zipfile_serialization=False)
    imported = import_torch_checkpoint(path, input_shape=(size, size, 3))
    assert imported.source == "mit" and imported.spec.backbone == "mobilenet_v2"
    assert_clip_parity(imported.model, network, clip)


@pytest.mark.parametrize("size", [64, pytest.param(65, marks=pytest.mark.slow)])
def test_mit_online_mobilenet_v2_matches_frame_by_frame(size, tmp_path):
    """The online demo's network with its buffers vs `build_online` of the import."""
    segments = 6
    frames = random_clip(1, segments, size, seed=29)[0]
    network = ref.MitOnlineMobileNetV2(num_classes=27)
    ref.randomize(network, seed=23)
    zeros = [buffer.expand((segments,) + buffer.shape[1:]) for buffer in network.zero_buffers(size, size)]
    ref.calibrate_batch_norms(network, lambda: network(to_torch(frames), *zeros), seed=23)
    path = tmp_path / "mobilenetv2_jester_online.pth.tar"
    torch.save(network.state_dict(), path, _use_new_zipfile_serialization=False)
    imported = import_torch_checkpoint(path, num_segments=segments, input_shape=(size, size, 3))
    assert imported.source == "mit_online"
    assert imported.spec.direction == "unidirectional"
    online = build_online(imported.model)
    assert len(online.state_names) == len(ref.MitOnlineMobileNetV2.SHIFT_BLOCKS)

    buffers = network.zero_buffers(size, size)
    states = online.init_states()
    torch_logits, worst = [], 0.0
    for frame in frames:
        with torch.no_grad():
            expected, *buffers = network(to_torch(frame[None]), *buffers)
        outputs = online({"image": frame[None], **states})
        difference = relative_difference(outputs["logits"], expected.numpy())
        assert difference <= TOLERANCE, f"frame logits differ by {difference:.2e}"
        states = {name: np.asarray(outputs[name]) for name in online.state_names}
        for name, buffer in zip(online.state_names, buffers):  # same buffers, NHWC vs NCHW
            np.testing.assert_allclose(to_torch(states[name]).numpy(), buffer.numpy(), rtol=1e-4, atol=1e-4)
        torch_logits.append(expected.numpy()[0])
        worst = max(worst, difference)
    print(f"online max relative difference {worst:.2e}")
    # The imported offline (uni-directional) model: the clip logits are the mean of the frames'.
    clip_logits = np.asarray(imported.model(frames[None]))
    assert relative_difference(clip_logits, np.mean(torch_logits, axis=0)[None]) <= TOLERANCE


@pytest.mark.parametrize("deploy,size", [pytest.param(False, 65, marks=pytest.mark.slow), (True, 64)])
def test_mmaction2_mobileone_s4_logits_match(deploy, size, tmp_path):
    """MobileOne-S4 TSM, train and deploy formats; clips of 8 with shifts built for 4.

    As MMAction2's 1x1x16 config (backbone num_segments=8, head 16), scaled down.
    """
    segments, backbone_segments = 8, 4
    clip = random_clip(2, segments, size, seed=37)
    network = ref.MMRecognizer(ref.MMMobileOneTSM("s4", num_segments=backbone_segments), 2048, 4)
    make_reference(network, clip, seed=31)
    if deploy:  # a deploy checkpoint is the reparameterized train-time one
        deployed = ref.MMMobileOneTSM("s4", num_segments=backbone_segments, deploy=True)
        ref.reparameterize_mobileone(network.backbone, deployed)
        train_logits = network(to_torch(clip)).detach().numpy()
        network.backbone = deployed
        assert relative_difference(network(to_torch(clip)).detach().numpy(), train_logits) < 1e-4
    config_text = (
        "model = dict(type='Recognizer2D', backbone=dict(type='MobileOneTSM', arch='s4', "
        f"shift_div=8, num_segments={backbone_segments}, is_shift=True), "
        f"cls_head=dict(type='TSMHead', num_segments={segments}, num_classes=4, in_channels=2048))"
    )
    path = tmp_path / "tsm_imagenet-pretrained-mobileone-s4_8xb16-1x1x16-50e_kinetics400-rgb.pth"
    save_mmaction2(network, path, config_text)
    imported = import_torch_checkpoint(path, input_shape=(size, size, 3))
    config = imported.spec.to_dict()
    assert config["backbone"] == "mobileone_s4" and config["num_segments"] == segments
    assert config["backbone_options"] == {"deploy": deploy, "shift_segments": backbone_segments}
    assert_clip_parity(imported.model, network, clip)


def test_load_torch_checkpoint_returns_the_model(tmp_path):
    network = ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=2), 1280, 3)
    clip = random_clip(2, 2, 48)
    make_reference(network, clip)
    save_mmaction2(network, tmp_path / "model.pth")
    model = load_torch_checkpoint(tmp_path / "model.pth", num_segments=2, input_shape=(48, 48, 3))
    assert model.output_shape == (None, 3)
    assert_clip_parity(model, network, clip)
