"""TSM ResNet-18/34 (basic blocks): ImageNet import, complexity, online model, MMAction2 parity.

The PyTorch networks here are written from torchvision's `BasicBlock` /
`ResNet` and MMAction2's `ResNetTSM` (basic blocks, the residual shift
wrapping `conv1`: docs/reference.md#shift-placement), independently of the
Keras builder; their keys follow docs/reference.md#checkpoint-layouts.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tests import torch_reference as ref  # noqa: E402
from tests.online_reference import per_frame_logits, relative_error, run_online  # noqa: E402
from tests.convert.parity import (  # noqa: E402
    assert_clip_parity,
    keras_logits_with_torch_head,
    make_reference,
    random_clip,
    save_mmaction2,
)

from tsm_keras import build_tsm, model_complexity  # noqa: E402
from tsm_keras.convert import import_torch_checkpoint  # noqa: E402
from tsm_keras.export import build_online  # noqa: E402

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)


# -- PyTorch references ----------------------------------------------------------


class TorchvisionBasicBlock(nn.Module):
    """torchvision `BasicBlock`: conv1 (strided 3x3), bn1, relu, conv2, bn2, + shortcut, relu."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class MMBasicBlock(nn.Module):
    """MMAction2 `BasicBlock`: `conv1`, `conv2` ConvModules, `downsample` (conv, bn)."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = ref.ConvModule(cin, planes, 3, stride, 1)
        self.conv2 = ref.ConvModule(planes, planes, 3, 1, 1, act=None)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = ref.ConvModule(cin, planes, 1, stride, act=None)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.conv2(self.conv1(x)) + identity)


def basic_stages(block, depth):
    layers, cin = [], 64
    for stage, (blocks, planes) in enumerate(zip(STAGES[depth], WIDTHS)):
        units = [block(cin if i == 0 else planes, planes, 2 if stage and i == 0 else 1) for i in range(blocks)]
        layers.append(nn.Sequential(*units))
        cin = planes
    return layers


class TorchvisionResNetBasic(nn.Module):
    """torchvision ResNet-18/34 (`conv1`, `bn1`, `layer1..4`, `fc`)."""

    def __init__(self, depth, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for index, layer in enumerate(basic_stages(TorchvisionBasicBlock, depth), start=1):
            setattr(self, f"layer{index}", layer)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


class MMResNetBasicTSM(nn.Module):
    """MMAction2 `ResNetTSM(depth=18/34)`: shift wrapping `conv1.conv` (blockres) or the block."""

    def __init__(self, depth, num_segments, shift_place="blockres", temporal_pool=False, shift_div=8):
        super().__init__()
        self.conv1 = ref.ConvModule(3, 64, 7, 2, 3)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for index, layer in enumerate(basic_stages(MMBasicBlock, depth), start=1):
            setattr(self, f"layer{index}", layer)
        segments = [num_segments] + [num_segments // (2 if temporal_pool else 1)] * 3
        for stage in range(1, 5):  # fewer than 23 blocks in layer3: every block shifts
            layer = getattr(self, f"layer{stage}")
            for index, block in enumerate(layer):
                if shift_place == "block":
                    layer[index] = ref.TemporalShift(block, segments[stage - 1], shift_div)
                else:
                    block.conv1.conv = ref.TemporalShift(block.conv1.conv, segments[stage - 1], shift_div)
        if temporal_pool:
            self.layer2 = ref.TemporalPool(self.layer2, num_segments)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# -- torchvision ImageNet weights ---------------------------------------------------


@pytest.mark.parametrize("depth", [18, 34])
def test_torchvision_imagenet_weights_fill_a_resnet_basic_tsn(depth, tmp_path):
    size, segments = 33, 2
    clip = random_clip(2, segments, size, seed=depth)
    network = ref.randomize(TorchvisionResNetBasic(depth, num_classes=5), seed=depth)
    frames = torch.from_numpy(clip).permute(0, 1, 4, 2, 3).reshape(-1, 3, size, size)
    ref.calibrate_batch_norms(network, lambda: network(frames), seed=depth)
    path = tmp_path / f"resnet{depth}-imagenet.pth"
    torch.save(network.state_dict(), path)  # torchvision files are bare state dicts

    model = build_tsm(
        f"resnet{depth}", 5, num_segments=segments, layout="torch", shift=False,
        input_shape=(size, size, 3), weights=path,
    )
    got, expected = keras_logits_with_torch_head(model, network, clip)
    assert np.max(np.abs(expected)) > 0.1
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) <= 1e-4


# -- MMAction2 checkpoints ------------------------------------------------------------


@pytest.mark.parametrize(
    "depth,size,options",
    [(18, 64, {}), (34, 65, {"shift_place": "block", "temporal_pool": True})],
)
def test_mmaction2_resnet_basic_logits_match(depth, size, options, tmp_path):
    segments = 4
    out_segments = segments // 2 if options.get("temporal_pool") else segments
    network = ref.MMRecognizer(MMResNetBasicTSM(depth, segments, **options), 512, 7, out_segments)
    clip = random_clip(2, segments, size, seed=depth)
    make_reference(network, clip, seed=depth)
    path = tmp_path / f"tsm_imagenet-pretrained-r{depth}_8xb16-1x1x{segments}-50e_kinetics400-rgb.pth"
    save_mmaction2(network, path)
    imported = import_torch_checkpoint(path, input_shape=(size, size, 3))
    config = imported.spec.to_dict()
    # ResNet-34 has the 6 blocks of ResNet-50 in layer3: only the block type tells them apart.
    assert config["backbone"] == f"resnet{depth}" and config["num_classes"] == 7
    assert config["num_segments"] == segments and config["shift_div"] == 8
    assert config["shift_place"] == options.get("shift_place", "blockres")
    assert config["temporal_pool"] == options.get("temporal_pool", False)
    shifts = [layer for layer in imported.model.layers if layer.name.endswith("_shift")]
    assert len(shifts) == sum(STAGES[depth])
    assert_clip_parity(imported.model, network, clip)


# -- FLOPs and parameters ---------------------------------------------------------------


def hand_count(depth, size=224, num_classes=1000, segments=8):
    """`(conv MACs, BatchNorm ops, params)` of a TSM ResNet-18/34 clip, counted from the architecture.

    The project's convention: conv multiply-accumulates plus 2 operations per
    BatchNorm output element for `segments` frames; the classifier counts in
    the parameters only.
    """
    totals = {"macs": 0, "bn": 0, "params": 0}

    def conv(side, kernel, cin, cout):
        totals["macs"] += side * side * kernel * kernel * cin * cout
        totals["params"] += kernel * kernel * cin * cout

    def norm(side, channels):
        totals["bn"] += 2 * side * side * channels
        totals["params"] += 2 * channels

    side = size // 2
    conv(side, 7, 3, 64)
    norm(side, 64)
    side //= 2  # max pool
    cin = 64
    for stage, (blocks, width) in enumerate(zip(STAGES[depth], WIDTHS)):
        for index in range(blocks):
            stride = 2 if stage and index == 0 else 1
            side //= stride
            conv(side, 3, cin, width)
            norm(side, width)
            conv(side, 3, width, width)
            norm(side, width)
            if stride != 1 or cin != width:
                conv(side, 1, cin, width)
                norm(side, width)
            cin = width
    totals["params"] += 512 * num_classes + num_classes
    return segments * totals["macs"], segments * totals["bn"], totals["params"]


@pytest.mark.parametrize(
    "depth,published_gmacs,published_params",
    # torchvision's model table (docs/reference.md#flops-and-parameters): ResNet-18
    # 1.81 GMACs / 11,689,512 params, ResNet-34 3.66 GMACs / 21,797,672 params, per
    # 224x224 frame with a 1000-class head, BatchNorm not counted.
    [(18, 1.81, 11_689_512), (34, 3.66, 21_797_672)],
)
def test_complexity_counts_the_basic_block_networks(depth, published_gmacs, published_params):
    model = build_tsm(f"resnet{depth}", 1000, num_segments=8, layout="torch")
    result = model_complexity(model)
    macs, batch_norm_ops, params = hand_count(depth)
    assert result["flops"] == macs + batch_norm_ops
    assert result["params"] == params == published_params
    assert macs / 8 / 1e9 == pytest.approx(published_gmacs, rel=0.01)
    print(f"resnet{depth} x8 at 224: {result['flops'] / 1e9:.2f} G, {result['params'] / 1e6:.2f} M")


# -- online model ---------------------------------------------------------------------


@pytest.mark.parametrize("depth,shift_place", [(18, "blockres"), (34, "block")])
def test_online_resnet_basic_matches_offline_per_frame(depth, shift_place, tiny_tsm):
    segments, size = 5, 32
    offline = tiny_tsm(
        backbone=f"resnet{depth}", num_segments=segments, shift_place=shift_place,
        direction="unidirectional", layout="torch", input_shape=(size, size, 3),
    )
    online = build_online(offline)
    assert len(online.state_names) == sum(STAGES[depth])  # one buffer per shifted block
    clip = np.random.default_rng(2).normal(size=(1, segments, size, size, 3)).astype("float32")
    expected = per_frame_logits(offline, clip)
    actual = run_online(online, clip)
    assert relative_error(actual, expected) <= 1e-5
    # Frames differ, and later frames see earlier ones: parity is not trivially 0 == 0.
    assert np.abs(expected[1:] - expected[:-1]).max() > 1e-3 * np.abs(expected).max()
