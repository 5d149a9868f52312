"""Helpers comparing an imported Keras model with the PyTorch reference network.

Shared by the import parity and strictness tests and the ResNet-basic backbone
tests; the reference networks themselves are in `tests.torch_reference`.
"""

import numpy as np
import torch

from tests import torch_reference as ref

TOLERANCE = 1e-4


def random_clip(batch, segments, size, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, segments, size, size, 3)).astype("float32")


def to_torch(array):
    """NHWC (any leading dims) -> NCHW torch tensor."""
    array = np.asarray(array)
    axes = tuple(range(array.ndim - 3)) + (array.ndim - 1, array.ndim - 3, array.ndim - 2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(axes)))


def relative_difference(got, expected):
    return float(np.max(np.abs(np.asarray(got) - expected)) / np.max(np.abs(expected)))


def assert_clip_parity(model, network, clip):
    """Batch 1 and batch 2 logits of `model` equal `network`'s; returns the worst."""
    with torch.no_grad():
        expected = network(to_torch(clip)).numpy()
    # A meaningful comparison: logits of order 1 that depend on the clip.
    scale = np.max(np.abs(expected))
    assert 0.1 < scale < 1e3 and np.max(np.abs(expected[0] - expected[1])) > 0.05 * scale
    worst = 0.0
    for batch in (1, 2):
        got = model(clip[:batch], training=False)
        assert tuple(got.shape) == expected[:batch].shape
        difference = relative_difference(got, expected[:batch])
        assert difference <= TOLERANCE, f"batch {batch}: relative difference {difference:.2e}"
        worst = max(worst, difference)
    print(f"max relative difference {worst:.2e}")
    return worst


def make_reference(network, clip, seed=0):
    """Random weights, and BatchNorm statistics calibrated on `clip` (see torch_reference)."""
    ref.randomize(network, seed=seed)
    return ref.calibrate_batch_norms(network, lambda: network(to_torch(clip)), seed=seed)


def save_mmaction2(network, path, config_text=None):
    checkpoint = {"state_dict": network.state_dict(), "meta": {"mmengine_version": "0.7.0"}}
    if config_text:
        checkpoint["meta"]["cfg"] = config_text
    torch.save(checkpoint, path)


def save_mit(network, path):
    """mit-han-lab's `save_checkpoint`: epoch, arch, state_dict of DataParallel."""
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": network.state_dict(), "best_prec1": 71.2}, path)


def keras_logits_with_torch_head(model, network, clip):
    """Gives both networks the same random classifier, returns both clip logits."""
    layer = model.get_layer("fc_cls")
    rng = np.random.default_rng(3)
    fan_in = layer.kernel.shape[0]
    kernel = (rng.standard_normal(layer.kernel.shape) / np.sqrt(fan_in)).astype("float32")
    bias = (0.1 * rng.standard_normal(layer.bias.shape)).astype("float32")
    layer.set_weights([kernel, bias])
    head = network.fc if hasattr(network, "fc") else network.classifier[1]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(kernel.T))
        head.bias.copy_(torch.from_numpy(bias))
        frames = torch.from_numpy(clip).permute(0, 1, 4, 2, 3).reshape(-1, 3, *clip.shape[2:4])
        expected = network(frames).view(clip.shape[0], clip.shape[1], -1).mean(1).numpy()
    return np.asarray(model(clip)), expected
