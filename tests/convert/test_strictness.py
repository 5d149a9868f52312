"""Every tensor used, every Keras weight filled, or a precise error; ImageNet backbones."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests import torch_reference as ref  # noqa: E402
from tests.convert.parity import keras_logits_with_torch_head  # noqa: E402

from tsm_keras import build_tsm  # noqa: E402
from tsm_keras.convert import (  # noqa: E402
    CheckpointMismatchError,
    import_torch_checkpoint,
    load_torch_backbone_weights,
)

SIZE = (32, 32, 3)


@pytest.fixture(scope="module")
def mobilenet_state():
    network = ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=2), 1280, 3)
    return ref.randomize(network).state_dict()


def save(state, path):
    torch.save({"state_dict": state}, path)
    return path


def import_error(state, tmp_path):
    path = save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError) as caught:
        import_torch_checkpoint(path, num_segments=2, input_shape=SIZE)
    return caught.value


def test_a_missing_tensor_is_named_with_its_keras_weight(mobilenet_state, tmp_path):
    state = dict(mobilenet_state)
    del state["backbone.layer2.0.conv.1.bn.running_var"]  # block 1, depthwise BN
    error = import_error(state, tmp_path)
    assert error.missing == ["backbone.layer2.0.conv.1.bn.running_var -> block1_depthwise_bn/moving_variance"]
    assert not error.unexpected and not error.mismatched
    assert "1 missing keys" in str(error)


def test_an_extra_tensor_is_named(mobilenet_state, tmp_path):
    state = dict(mobilenet_state, **{"backbone.layer3.1.extra.weight": torch.zeros(4)})
    error = import_error(state, tmp_path)
    assert error.unexpected == ["backbone.layer3.1.extra.weight"]
    assert not error.missing and not error.mismatched


def test_a_wrong_shape_names_both_sides(mobilenet_state, tmp_path):
    state = dict(mobilenet_state)
    state["backbone.layer4.2.conv.0.net.conv.weight"] = torch.zeros(384, 64, 3, 3)  # block 8, was 1x1
    error = import_error(state, tmp_path)
    assert len(error.mismatched) == 1
    message = error.mismatched[0]
    assert message.startswith("backbone.layer4.2.conv.0.net.conv.weight (384, 64, 3, 3)")
    assert message.endswith("-> block8_expand_conv/kernel (1, 1, 64, 384)")


def test_a_shift_placement_that_disagrees_is_reported_as_keys(mobilenet_state, tmp_path):
    """Weights saved without the shift wrapper of block 2 while the others have it."""
    state = dict(mobilenet_state)
    for name in ("weight",):
        state[f"backbone.layer2.1.conv.0.conv.{name}"] = state.pop(f"backbone.layer2.1.conv.0.net.conv.{name}")
    error = import_error(state, tmp_path)
    assert error.missing == ["backbone.layer2.1.conv.0.net.conv.weight -> block2_expand_conv/kernel"]
    assert error.unexpected == ["backbone.layer2.1.conv.0.conv.weight"]


def test_num_batches_tracked_is_the_only_key_dropped(mobilenet_state, tmp_path):
    path = save(mobilenet_state, tmp_path / "model.pth")
    imported = import_torch_checkpoint(path, num_segments=2, input_shape=SIZE)
    assert imported.dropped and all(key.endswith("num_batches_tracked") for key in imported.dropped)
    used = len(mobilenet_state) - len(imported.dropped)
    assert used == sum(int(np.prod(v.shape) > 0) for v in imported.model.weights if "seed_generator" not in v.path)


def test_non_local_mode_must_be_named_when_the_file_cannot_tell(tmp_path):
    network = ref.MMRecognizer(ref.MMResNetTSM(50, num_segments=2, non_local="embedded_gaussian"), 2048, 3)
    path = save(network.state_dict(), tmp_path / "checkpoint.pth")
    with pytest.raises(ValueError, match="pass non_local='dot_product' or 'embedded_gaussian'"):
        import_torch_checkpoint(path, num_segments=2, input_shape=SIZE)


def test_source_and_arch_arguments_are_checked(mobilenet_state, tmp_path):
    path = save(mobilenet_state, tmp_path / "model.pth")
    with pytest.raises(ValueError, match="looks like a 'mmaction2' checkpoint"):
        import_torch_checkpoint(path, source="mit", input_shape=SIZE)
    with pytest.raises(ValueError, match="holds 'mobilenet_v2'"):
        import_torch_checkpoint(path, arch="resnet50", input_shape=SIZE)


def test_resolved_values_and_further_fields_go_through_the_spec(mobilenet_state, tmp_path):
    from tsm_keras.utils.config import ConfigError

    path = save(mobilenet_state, tmp_path / "model.pth")
    with pytest.raises(ConfigError, match=r"^model\.direction: expected one of \['bidirectional', "
                                          r"'unidirectional'\], got 'sideways'$"):
        import_torch_checkpoint(path, num_segments=2, direction="sideways", input_shape=SIZE)
    with pytest.raises(ConfigError, match=r"^model\.dropout: expected a number in \[0, 1\), got 1$"):
        import_torch_checkpoint(path, num_segments=2, input_shape=SIZE, dropout=1)
    with pytest.raises(ConfigError, match=r"^model\.dropuot: unknown key"):
        import_torch_checkpoint(path, num_segments=2, input_shape=SIZE, dropuot=0.1)
    with pytest.raises(ValueError, match="layout cannot be given as further spec fields"):
        import_torch_checkpoint(path, num_segments=2, input_shape=SIZE, layout="keras")
    imported = import_torch_checkpoint(path, num_segments=2, input_shape=SIZE, dropout=0.25)
    assert imported.model.spec is imported.spec and imported.spec.dropout == 0.25
    assert imported.spec.layout == "torch" and imported.inferred["dropout"] == "argument"


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v2"])
def test_torchvision_imagenet_backbone_fills_a_torch_layout_tsn(backbone, tmp_path):
    size, segments = 33, 2
    clip = np.random.default_rng(1).standard_normal((2, segments, size, size, 3)).astype("float32")
    network = ref.TorchvisionResNet(50, num_classes=5) if backbone == "resnet50" else ref.TorchvisionMobileNetV2(5)
    ref.randomize(network, seed=2)
    frames = torch.from_numpy(clip).permute(0, 1, 4, 2, 3).reshape(-1, 3, size, size)
    ref.calibrate_batch_norms(network, lambda: network(frames), seed=2)
    path = tmp_path / f"{backbone}-imagenet.pth"
    torch.save(network.state_dict(), path)  # torchvision files are bare state dicts

    model = build_tsm(
        backbone, 5, num_segments=segments, layout="torch", shift=False, input_shape=(size, size, 3), weights=path
    )
    got, expected = keras_logits_with_torch_head(model, network, clip)
    assert np.max(np.abs(expected)) > 0.1
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) <= 1e-4


def test_torchvision_backbone_leaves_only_classifier_and_non_local_at_init(tmp_path):
    network = ref.randomize(ref.TorchvisionResNet(50))
    with torch.no_grad():  # no value may equal its Keras initial value by chance
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(0.1, 0.2)
                module.running_var.uniform_(2.0, 3.0)
    path = tmp_path / "resnet50.pth"
    torch.save(network.state_dict(), path)
    model = build_tsm("resnet50", 5, num_segments=2, layout="torch", non_local="gaussian", input_shape=SIZE)
    before = {v.path: v.numpy() for v in model.weights}
    load_torch_backbone_weights(model, path)
    unchanged = {v.path.split("/")[0] for v in model.weights if np.array_equal(before[v.path], v.numpy())}
    assert unchanged == {"fc_cls", "layer2_block0_non_local", "layer2_block2_non_local",
                         "layer3_block0_non_local", "layer3_block2_non_local", "layer3_block4_non_local"}


def test_a_failed_backbone_load_changes_nothing(tmp_path):
    network = ref.TorchvisionMobileNetV2()
    state = network.state_dict()
    del state["features.5.conv.1.1.weight"]
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    model = build_tsm("mobilenet_v2", 5, num_segments=2, layout="torch", input_shape=SIZE)
    before = [v.numpy() for v in model.weights]
    with pytest.raises(CheckpointMismatchError, match=r"features\.5\.conv\.1\.1\.weight -> block4_depthwise_bn/gamma"):
        load_torch_backbone_weights(model, path)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))


def test_an_mmaction2_checkpoint_seeds_the_backbone_of_a_new_task(mobilenet_state, tmp_path):
    path = save(mobilenet_state, tmp_path / "k400.pth")
    model = build_tsm("mobilenet_v2", 11, num_segments=2, layout="torch", input_shape=SIZE, weights=path)
    kernel = model.get_layer("last_conv").get_weights()[0]
    expected = mobilenet_state["backbone.conv2.conv.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(kernel, expected)


@pytest.mark.parametrize("layout", ["without_data_parallel", "classifier_in_base_model"])
def test_mit_checkpoint_variants_find_their_classifier(layout, tmp_path):
    state = ref.randomize(ref.mit_mobilenet_v2_tsn(2, 4)).state_dict()
    if layout == "without_data_parallel":
        state = {key[len("module."):]: value for key, value in state.items()}
        head = "new_fc"
    else:  # trained with dropout 0: the classifier stays in base_model
        state = {key.replace("module.new_fc", "module.base_model.classifier"): v for key, v in state.items()}
        head = "module.base_model.classifier"
    path = tmp_path / "TSM_something_RGB_mobilenetv2_shift8_blockres_avg_segment2_e25.pth"
    torch.save({"epoch": 25, "arch": "mobilenetv2", "state_dict": state}, path)
    imported = import_torch_checkpoint(path, input_shape=SIZE)
    assert imported.source == "mit" and imported.spec.num_classes == 4
    kernel = imported.model.get_layer("fc_cls").get_weights()[0]
    np.testing.assert_array_equal(kernel, state[f"{head}.weight"].numpy().T)
