"""PyTorch reference networks for the checkpoint-import parity tests (test-only).

Written from the published architectures, with module trees shaped like the
reference code so that `state_dict()` yields each family's keys by itself:

- MMAction2 `Recognizer2D` (`backbone.*` of mmcv-style `ConvModule`s with
  `.conv` / `.bn`, `cls_head.fc_cls`): ResNet-50/101 (`ResNetTSM`, style
  "pytorch": stride on the 3x3 conv), MobileNetV2 (`MobileNetV2TSM`),
  MobileOne (`MobileOneTSM` on mmpretrain's `MobileOneBlock`), with
  `TemporalShift(net)` wrappers, `NL3DWrapper(block)` holding an mmcv-style
  `NonLocal3d`, and `TemporalPool(layer2)`.
- mit-han-lab `TSN` inside `DataParallel` (`module.base_model.*` with
  torchvision names, `module.new_fc`): ResNet and their MobileNetV2.
- mit-han-lab `online_demo` MobileNetV2 (`features.*`, `classifier`) with
  per-block shift buffers.
- torchvision ResNet and MobileNetV2 (ImageNet backbone layout).

The temporal shift is the one written down in docs/reference.md#the-temporal-shift
(zero edges, `fold = C // shift_div`); the key layouts are those of
docs/reference.md#checkpoint-layouts. Nothing here imports tsm_keras.
"""

import math

import torch
from torch import nn

# -- shared pieces -------------------------------------------------------------


def temporal_shift(x, num_segments, shift_div=8):
    """Bi-directional shift of `(N*T, C, H, W)`: [0:fold] from t+1, [fold:2fold] from t-1."""
    frames, channels, height, width = x.shape
    x = x.view(frames // num_segments, num_segments, channels, height, width)
    fold = channels // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(frames, channels, height, width)


class TemporalShift(nn.Module):
    """`TemporalShift(net)`: shift, then `net` (weights under `.net`)."""

    def __init__(self, net, num_segments, shift_div=8):
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x):
        return self.net(temporal_shift(x, self.num_segments, self.shift_div))


class TemporalPool(nn.Module):
    """MMAction2 / mit-han-lab: max-pool time (3, 2, 1) before `net` (layer2)."""

    def __init__(self, net, num_segments):
        super().__init__()
        self.net = net
        self.num_segments = num_segments

    def forward(self, x):
        frames, channels, height, width = x.shape
        x = x.view(frames // self.num_segments, self.num_segments, channels, height, width)
        x = nn.functional.max_pool3d(
            x.transpose(1, 2), kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)
        )
        x = x.transpose(1, 2).contiguous()
        return self.net(x.view(-1, channels, height, width))


class ConvModule(nn.Module):
    """mmcv `ConvModule`: `conv` (no bias when normalised), `bn`, activation."""

    def __init__(
        self, cin, cout, kernel, stride=1, padding=0, groups=1, act=nn.ReLU, dims=2, norm=True
    ):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(cin, cout, kernel, stride, padding, groups=groups, bias=not norm)
        if norm:
            self.bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(cout)
        self.norm = norm
        self.act = act() if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm:
            x = self.bn(x)
        return self.act(x) if self.act else x


def clip_forward(backbone, head, clip, num_segments_out=None):
    """`(N, T, 3, H, W)` -> logits averaged over (output) frames."""
    batch, segments = clip.shape[:2]
    features = backbone(clip.reshape((-1,) + tuple(clip.shape[2:])))
    logits = head(features.mean((2, 3)))
    return logits.view(batch, num_segments_out or segments, -1).mean(1)


def randomize(module, seed=0):
    """Random weights and BatchNorm affine parameters, in place.

    Weights are normal with variance `1 / fan_in`; BatchNorm scales are
    uniform in [0.5, 1.5], shifts and biases normal with std 0.1. Follow with
    `calibrate_batch_norms` for the running statistics.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = sub.weight[0].numel()
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * math.sqrt(1.0 / fan_in))
                if sub.bias is not None:
                    sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=generator))
            elif isinstance(sub, (nn.BatchNorm2d, nn.BatchNorm3d)):
                sub.weight.copy_(0.5 + torch.rand(sub.weight.shape, generator=generator))
                sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=generator))
    return module.eval()


def calibrate_batch_norms(module, forward, seed=0):
    """Non-trivial running statistics that keep a deep random network alive.

    Runs `forward()` once in eval mode; just before each BatchNorm runs, its
    running statistics are set from its actual input: the mean plus 0.2 std
    of noise, and as "variance" the second moment `E[x^2]` times U(0.6, 1.4)
    plus a tenth of the layer's average. Each layer is thereby calibrated on
    the perturbed network it is part of (without this, random statistics let
    activations explode or collapse to constants over 20-50 layers, and the
    logits stop depending on the input). Dividing by the second moment rather
    than the variance keeps a nearly constant input (e.g. a Non-local block
    averaging over a flat softmax) from amplifying float32 rounding, so the
    reference stays well conditioned and a 1e-4 parity bound is meaningful.
    """
    generator = torch.Generator().manual_seed(seed + 1)

    def set_statistics(norm, inputs):
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))
        mean, second_moment = x.mean(dims), (x * x).mean(dims)
        std = (second_moment - mean * mean).clamp(min=0).sqrt()
        norm.running_mean.copy_(mean + 0.2 * std * torch.randn(mean.shape, generator=generator))
        spread = 0.6 + 0.8 * torch.rand(mean.shape, generator=generator)
        norm.running_var.copy_(second_moment * spread + 0.1 * second_moment.mean())
        norm.num_batches_tracked.fill_(1234)

    norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    handles = [norm.register_forward_pre_hook(set_statistics) for norm in norms]
    module.eval()
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return module


# -- ResNet ----------------------------------------------------------------------

RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class MMBottleneck(nn.Module):
    """MMAction2 `Bottleneck` (style "pytorch"): conv1/conv2/conv3 ConvModules."""

    def __init__(self, cin, planes, stride, downsample):
        super().__init__()
        self.conv1 = ConvModule(cin, planes, 1)
        self.conv2 = ConvModule(planes, planes, 3, stride, 1)
        self.conv3 = ConvModule(planes, planes * 4, 1, act=None)
        self.downsample = ConvModule(cin, planes * 4, 1, stride, act=None) if downsample else None
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class TorchvisionBottleneck(nn.Module):
    """torchvision `Bottleneck` (v1.5): conv1, bn1, ..., downsample = (conv, bn)."""

    def __init__(self, cin, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            if downsample
            else None
        )

    def forward(self, x):
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _stages(block, depth):
    layers, cin = [], 64
    for stage, (blocks, planes) in enumerate(zip(RESNET_STAGES[depth], (64, 128, 256, 512))):
        units = []
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            units.append(block(cin, planes, stride, index == 0))
            cin = planes * 4
        layers.append(nn.Sequential(*units))
    return layers


class MMResNetTSM(nn.Module):
    """MMAction2 `ResNetTSM` (shift, Non-local and temporal pool as its `init_structure`)."""

    def __init__(
        self,
        depth=50,
        num_segments=8,
        shift_div=8,
        shift_place="blockres",
        non_local=None,
        temporal_pool=False,
        is_shift=True,
    ):
        super().__init__()
        self.conv1 = ConvModule(3, 64, 7, 2, 3)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for index, layer in enumerate(_stages(MMBottleneck, depth), start=1):
            setattr(self, f"layer{index}", layer)
        segments = [num_segments] + [num_segments // (2 if temporal_pool else 1)] * 3
        if is_shift:
            n_round = 2 if len(self.layer3) >= 23 and shift_place == "blockres" else 1
            for stage in range(1, 5):
                layer = getattr(self, f"layer{stage}")
                for index, block in enumerate(layer):
                    if shift_place == "block":
                        layer[index] = TemporalShift(block, segments[stage - 1], shift_div)
                    elif index % n_round == 0:
                        block.conv1.conv = TemporalShift(block.conv1.conv, segments[stage - 1], shift_div)
        if non_local:
            for stage, indices in ((2, (0, 2)), (3, (0, 2, 4))):
                layer = getattr(self, f"layer{stage}")
                for index in indices:
                    layer[index] = NL3DWrapper(layer[index], num_segments, non_local)
        if temporal_pool:
            self.layer2 = TemporalPool(self.layer2, num_segments)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class NonLocal3d(nn.Module):
    """mmcv `NonLocal3d(sub_sample=True, use_scale=False, norm_cfg=BN3d)`."""

    def __init__(self, channels, mode):
        super().__init__()
        self.mode = mode
        self.inter = channels // 2
        pool = nn.MaxPool3d((1, 2, 2))
        self.g = nn.Sequential(ConvModule(channels, self.inter, 1, act=None, dims=3, norm=False), pool)
        self.conv_out = ConvModule(self.inter, channels, 1, act=None, dims=3)
        if mode != "gaussian":
            self.theta = ConvModule(channels, self.inter, 1, act=None, dims=3, norm=False)
            self.phi = nn.Sequential(ConvModule(channels, self.inter, 1, act=None, dims=3, norm=False), pool)
        else:
            self.phi = pool

    def forward(self, x):
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter, -1).permute(0, 2, 1)
        if self.mode == "gaussian":
            theta_x = x.view(n, x.size(1), -1).permute(0, 2, 1)
            phi_x = self.phi(x).view(n, x.size(1), -1)
        else:
            theta_x = self.theta(x).view(n, self.inter, -1).permute(0, 2, 1)
            phi_x = self.phi(x).view(n, self.inter, -1)
        pairwise = torch.matmul(theta_x, phi_x)
        if self.mode == "dot_product":
            pairwise = pairwise / pairwise.shape[-1]
        else:
            pairwise = pairwise.softmax(dim=-1)
        y = torch.matmul(pairwise, g_x).permute(0, 2, 1).reshape(n, self.inter, *x.shape[2:])
        return x + self.conv_out(y)


def scale_non_local(module, factor):
    """Scales the g / theta / phi convs of every Non-local block by `factor`.

    With variance-`1/fan_in` weights the dot-product block (no softmax) is
    cubic in its input and overflows through five blocks; mmcv initialises
    these convs with std 0.01 for the same reason.
    """
    with torch.no_grad():
        for block in module.modules():
            if isinstance(block, NonLocal3d):
                for branch in (block.g, getattr(block, "theta", None), block.phi):
                    for conv in branch.modules() if branch is not None else ():
                        if isinstance(conv, nn.Conv3d):
                            conv.weight.mul_(factor)
    return module


def scale_residual_stream(module, factor):
    """Scales the output BatchNorms of every residual branch, shortcut and Non-local block.

    The residual stream of a ResNet (the sum of those outputs) then shrinks by
    `factor` everywhere (inner BatchNorms renormalize), which keeps the
    softmax of Gaussian Non-local blocks, taken over raw dot products of
    512-1024 channels, away from a numerically fragile one-hot argmax.
    """
    with torch.no_grad():
        for block in module.modules():
            norms = []
            if isinstance(block, MMBottleneck):
                norms = [block.conv3.bn] + ([block.downsample.bn] if block.downsample is not None else [])
            elif isinstance(block, NonLocal3d):
                norms = [block.conv_out.bn]
            for norm in norms:
                norm.weight.mul_(factor)
                norm.bias.mul_(factor)
    return module


class NL3DWrapper(nn.Module):
    """MMAction2 `NL3DWrapper`: block, then Non-local over (T, H, W)."""

    def __init__(self, block, num_segments, mode):
        super().__init__()
        self.block = block
        self.non_local_block = NonLocal3d(block.conv3.bn.num_features, mode)
        self.num_segments = num_segments

    def forward(self, x):
        x = self.block(x)
        n, c, h, w = x.shape
        x = x.view(n // self.num_segments, self.num_segments, c, h, w).transpose(1, 2)
        x = self.non_local_block(x.contiguous())
        return x.transpose(1, 2).contiguous().view(n, c, h, w)


class TorchvisionResNet(nn.Module):
    """torchvision ResNet-50/101 (`conv1`, `bn1`, `layer1..4`, `fc`)."""

    def __init__(self, depth=50, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for index, layer in enumerate(_stages(TorchvisionBottleneck, depth), start=1):
            setattr(self, f"layer{index}", layer)
        self.fc = nn.Linear(2048, num_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def make_mit_resnet_shift(net, num_segments, shift_div=8, place="blockres"):
    """mit-han-lab `make_temporal_shift` on a torchvision ResNet."""
    n_round = 2 if len(net.layer3) >= 23 and place == "blockres" else 1
    for stage in range(1, 5):
        layer = getattr(net, f"layer{stage}")
        for index, block in enumerate(layer):
            if place == "block":
                layer[index] = TemporalShift(block, num_segments, shift_div)
            elif index % n_round == 0:
                block.conv1 = TemporalShift(block.conv1, num_segments, shift_div)
    return net


# -- MobileNetV2 -------------------------------------------------------------------

MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _mobilenet_v2_blocks():
    cin = 32
    for expansion, cout, repeats, first_stride in MOBILENET_V2_SETTINGS:
        for repeat in range(repeats):
            yield cin, cout, first_stride if repeat == 0 else 1, expansion
            cin = cout


class MMInvertedResidual(nn.Module):
    """MMAction2 `InvertedResidual`: `conv` = Sequential of ConvModules."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = int(round(cin * expansion))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [ConvModule(cin, hidden, 1, act=nn.ReLU6)] if expansion != 1 else []
        layers += [
            ConvModule(hidden, hidden, 3, stride, 1, groups=hidden, act=nn.ReLU6),
            ConvModule(hidden, cout, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MMMobileNetV2TSM(nn.Module):
    """MMAction2 `MobileNetV2TSM`: conv1, layer1..7, conv2; shift wraps `conv[0]`."""

    def __init__(self, num_segments=8, shift_div=8, is_shift=True):
        super().__init__()
        self.conv1 = ConvModule(3, 32, 3, 2, 1, act=nn.ReLU6)
        blocks = iter(_mobilenet_v2_blocks())
        for stage, (_, _, repeats, _) in enumerate(MOBILENET_V2_SETTINGS, start=1):
            setattr(self, f"layer{stage}", nn.Sequential(*[MMInvertedResidual(*next(blocks)) for _ in range(repeats)]))
        self.conv2 = ConvModule(320, 1280, 1, act=nn.ReLU6)
        if is_shift:
            for module in self.modules():
                if isinstance(module, MMInvertedResidual) and len(module.conv) == 3 and module.use_res_connect:
                    module.conv[0] = TemporalShift(module.conv[0], num_segments, shift_div)

    def forward(self, x):
        x = self.conv1(x)
        for stage in range(1, 8):
            x = getattr(self, f"layer{stage}")(x)
        return self.conv2(x)


def _conv_bn(cin, cout, kernel, stride, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU6()] if relu else [])


class MitInvertedResidual(nn.Module):
    """mit-han-lab `archs/mobilenet_v2.py` block: flat `conv` Sequential."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = int(round(cin * expansion))
        self.use_res_connect = stride == 1 and cin == cout
        layers = _conv_bn(cin, hidden, 1, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden) + _conv_bn(hidden, cout, 1, 1, relu=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MitMobileNetV2(nn.Module):
    """mit-han-lab MobileNetV2 (`features.0..18`, `classifier`)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        blocks = [MitInvertedResidual(*setting) for setting in _mobilenet_v2_blocks()]
        self.features = nn.Sequential(nn.Sequential(*_conv_bn(3, 32, 3, 2)), *blocks, nn.Sequential(*_conv_bn(320, 1280, 1, 1)))
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def make_mit_mobilenet_v2_shift(net, num_segments, shift_div=8):
    """mit-han-lab TSN: `TemporalShift(conv[0])` on residual blocks with expansion."""
    for module in net.modules():
        if isinstance(module, MitInvertedResidual) and len(module.conv) == 8 and module.use_res_connect:
            module.conv[0] = TemporalShift(module.conv[0], num_segments, shift_div)
    return net


class InvertedResidualWithShift(nn.Module):
    """mit-han-lab online demo: `x + conv(cat(buffer, x[:, c//8:]))`, next buffer `x[:, :c//8]`."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        assert expansion > 1 and stride == 1 and cin == cout
        hidden = cin * expansion
        self.conv = nn.Sequential(*_conv_bn(cin, hidden, 1, 1), *_conv_bn(hidden, hidden, 3, 1, groups=hidden), *_conv_bn(hidden, cout, 1, 1, relu=False))

    def forward(self, x, shift_buffer):
        fold = x.size(1) // 8
        return x + self.conv(torch.cat((shift_buffer, x[:, fold:]), dim=1)), x[:, :fold]


class MitOnlineMobileNetV2(nn.Module):
    """mit-han-lab `online_demo/mobilenet_v2_tsm.py`: `forward(frame, *buffers)`."""

    SHIFT_BLOCKS = (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)

    def __init__(self, num_classes=27):
        super().__init__()
        features = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        for index, setting in enumerate(_mobilenet_v2_blocks()):
            block = InvertedResidualWithShift if index in self.SHIFT_BLOCKS else MitInvertedResidual
            features.append(block(*setting))
        features.append(nn.Sequential(*_conv_bn(320, 1280, 1, 1)))
        self.features = nn.ModuleList(features)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x, *shift_buffer):
        buffers, out = iter(shift_buffer), []
        for feature in self.features:
            if isinstance(feature, InvertedResidualWithShift):
                x, state = feature(x, next(buffers))
                out.append(state)
            else:
                x = feature(x)
        return (self.classifier(x.mean(3).mean(2)), *out)

    def zero_buffers(self, height, width):
        """Zero shift buffers for a `(1, 3, height, width)` frame."""
        shapes, x = [], torch.zeros(1, 3, height, width)
        with torch.no_grad():
            for feature in self.features:
                if isinstance(feature, InvertedResidualWithShift):
                    shapes.append((1, x.shape[1] // 8) + tuple(x.shape[2:]))
                    x = x + feature.conv(x)
                else:
                    x = feature(x)
        return [torch.zeros(shape) for shape in shapes]


class TorchvisionMobileNetV2(nn.Module):
    """torchvision MobileNetV2: `Conv2dNormActivation` blocks, `classifier.1`."""

    def __init__(self, num_classes=1000):
        super().__init__()

        def cna(cin, cout, kernel, stride, groups=1):
            return nn.Sequential(*_conv_bn(cin, cout, kernel, stride, groups))

        class Block(nn.Module):
            def __init__(self, cin, cout, stride, expansion):
                super().__init__()
                hidden = int(round(cin * expansion))
                self.use_res_connect = stride == 1 and cin == cout
                layers = [cna(cin, hidden, 1, 1)] if expansion != 1 else []
                layers += [cna(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
                self.conv = nn.Sequential(*layers)

            def forward(self, x):
                return x + self.conv(x) if self.use_res_connect else self.conv(x)

        blocks = [Block(*setting) for setting in _mobilenet_v2_blocks()]
        self.features = nn.Sequential(cna(3, 32, 3, 2), *blocks, cna(320, 1280, 1, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


# -- MobileOne (mmpretrain) -------------------------------------------------------------

MOBILEONE_ARCHS = {
    "s0": ((0.75, 1.0, 1.0, 2.0), 4, (0, 0, 0, 0)),
    "s4": ((3.0, 3.5, 3.5, 4.0), 1, (0, 0, 5, 1)),
}


def _make_divisible(value, divisor=8, min_ratio=0.9):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < min_ratio * value else rounded


class ConvNorm(nn.Module):
    """mmcv ConvModule as mmpretrain's MobileOne builds it: `conv`, `norm`."""

    def __init__(self, cin, cout, kernel, stride, groups):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.norm(self.conv(x))


class SELayer(nn.Module):
    """mmpretrain `SELayer`: `conv1.conv` (ReLU), `conv2.conv` (sigmoid)."""

    def __init__(self, channels, squeeze):
        super().__init__()
        self.conv1 = nn.Module()
        self.conv1.conv = nn.Conv2d(channels, squeeze, 1)
        self.conv2 = nn.Module()
        self.conv2.conv = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        scale = torch.relu(self.conv1.conv(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.conv2.conv(scale))


class MobileOneBlock(nn.Module):
    """mmpretrain `MobileOneBlock` (train branches, or `branch_reparam` when deployed)."""

    def __init__(self, cin, cout, kernel, stride, branches, groups, se_channels=0, deploy=False):
        super().__init__()
        self.se = SELayer(cout, se_channels) if se_channels else nn.Identity()
        if deploy:
            self.branch_reparam = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=True)
        else:
            self.branch_conv_list = nn.ModuleList([ConvNorm(cin, cout, kernel, stride, groups) for _ in range(branches)])
            self.branch_scale = ConvNorm(cin, cout, 1, stride, groups) if kernel > 1 else None
            self.branch_norm = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.deploy = deploy

    def forward(self, x):
        if self.deploy:
            out = self.branch_reparam(x)
        else:
            out = sum(branch(x) for branch in self.branch_conv_list)
            if self.branch_scale is not None:
                out = out + self.branch_scale(x)
            if self.branch_norm is not None:
                out = out + self.branch_norm(x)
        return torch.relu(self.se(out))


def _fuse(conv_weight, norm, groups, kernel):
    """`(weight, bias)` of conv + BN folded into one conv of size `kernel`."""
    pad = (kernel - conv_weight.shape[-1]) // 2
    weight = nn.functional.pad(conv_weight, (pad, pad, pad, pad))
    std = (norm.running_var + norm.eps).sqrt()
    scale = norm.weight / std
    return weight * scale.view(-1, 1, 1, 1), norm.bias - norm.running_mean * scale


def fuse_mobileone_block(block, deployed):
    """Writes the single conv equivalent to `block`'s branches into `deployed`."""
    kernel = deployed.branch_reparam.kernel_size[0]
    groups = deployed.branch_reparam.groups
    parts = [_fuse(b.conv.weight, b.norm, groups, kernel) for b in block.branch_conv_list]
    if block.branch_scale is not None:
        parts.append(_fuse(block.branch_scale.conv.weight, block.branch_scale.norm, groups, kernel))
    if block.branch_norm is not None:
        channels = block.branch_norm.num_features
        identity = torch.zeros(channels, channels // groups, kernel, kernel)
        for channel in range(channels):
            identity[channel, channel % (channels // groups), kernel // 2, kernel // 2] = 1.0
        parts.append(_fuse(identity, block.branch_norm, groups, kernel))
    with torch.no_grad():
        deployed.branch_reparam.weight.copy_(sum(weight for weight, _ in parts))
        deployed.branch_reparam.bias.copy_(sum(bias for _, bias in parts))
        if isinstance(block.se, SELayer):
            deployed.se.load_state_dict(block.se.state_dict())


def reparameterize_mobileone(train_backbone, deploy_backbone):
    """Fills a deploy `MMMobileOneTSM` from a train-time one (same variant)."""
    pairs = zip(
        (m for m in train_backbone.modules() if isinstance(m, MobileOneBlock)),
        (m for m in deploy_backbone.modules() if isinstance(m, MobileOneBlock)),
    )
    for block, deployed in pairs:
        fuse_mobileone_block(block, deployed)
    return deploy_backbone.eval()


class MMMobileOneTSM(nn.Module):
    """MMAction2 `MobileOneTSM` (mmpretrain MobileOne; every block shift-wrapped)."""

    def __init__(self, arch="s4", num_segments=8, shift_div=8, deploy=False):
        super().__init__()
        widths, branches, se_blocks = MOBILEONE_ARCHS[arch]
        channels = min(64, int(64 * widths[0]))
        self.stage0 = MobileOneBlock(3, channels, 3, 2, 1, 1, deploy=deploy)
        for stage, (num_blocks, base) in enumerate(zip((2, 8, 10, 1), (64, 128, 256, 512))):
            planes = int(base * widths[stage])
            units = []
            for block in range(num_blocks):
                use_se = block >= num_blocks - se_blocks[stage]
                stride = 2 if block == 0 else 1
                units.append(MobileOneBlock(channels, channels, 3, stride, branches, channels, _make_divisible(channels // 16) if use_se else 0, deploy))
                units.append(MobileOneBlock(channels, planes, 1, 1, branches, 1, _make_divisible(planes // 16) if use_se else 0, deploy))
                channels = planes
            setattr(self, f"stage{stage + 1}", nn.Sequential(*units))
        self.stage0 = TemporalShift(self.stage0, num_segments, shift_div)
        for stage in range(1, 5):
            layer = getattr(self, f"stage{stage}")
            for index, block in enumerate(layer):
                layer[index] = TemporalShift(block, num_segments, shift_div)

    def forward(self, x):
        x = self.stage0(x)
        for stage in range(1, 5):
            x = getattr(self, f"stage{stage}")(x)
        return x


# -- whole recognisers in each family's key layout -----------------------------------------


class MMRecognizer(nn.Module):
    """MMAction2 `Recognizer2D`: `backbone`, `cls_head.fc_cls` (TSMHead, avg consensus)."""

    def __init__(self, backbone, feature_dim, num_classes, num_segments_out=None):
        super().__init__()
        self.backbone = backbone
        self.cls_head = nn.Module()
        self.cls_head.fc_cls = nn.Linear(feature_dim, num_classes)
        self.num_segments_out = num_segments_out

    def forward(self, clip):
        return clip_forward(self.backbone, self.cls_head.fc_cls, clip, self.num_segments_out)


class MitTSN(nn.Module):
    """mit-han-lab `TSN` (`base_model`, `new_fc`)."""

    def __init__(self, base_model, feature_dim, num_classes):
        super().__init__()
        self.base_model = base_model
        self.new_fc = nn.Linear(feature_dim, num_classes)

    def forward(self, clip):
        return clip_forward(self.base_model.features, self.new_fc, clip)


class DataParallelLike(nn.Module):
    """Stands for `nn.DataParallel` when saving: keys gain `module.`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, clip):
        return self.module(clip)


def mit_resnet_tsn(depth, num_segments, num_classes, place="blockres"):
    base = make_mit_resnet_shift(TorchvisionResNet(depth), num_segments, place=place)
    del base.fc  # TSN replaces it with Dropout: no keys
    return DataParallelLike(MitTSN(base, 2048, num_classes))


def mit_mobilenet_v2_tsn(num_segments, num_classes):
    base = make_mit_mobilenet_v2_shift(MitMobileNetV2(), num_segments)
    del base.classifier
    return DataParallelLike(MitTSN(base, 1280, num_classes))
