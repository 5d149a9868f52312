"""Presets: download (file:// URLs to checkpoints built here), hash check, cache, offline failure.

The checkpoints are PyTorch reference networks (`torch_reference.py`) with random weights,
saved as MMAction2 saves them; a test points a preset's URL and hash at such a file.
"""

import dataclasses
import hashlib
import os
import pathlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tsm_keras  # noqa: E402
from tsm_keras import presets  # noqa: E402
from tsm_keras.models import TSM  # noqa: E402
from tsm_keras.training.config import load_config  # noqa: E402
from tsm_keras.convert import import_torch_checkpoint, load_torch_checkpoint  # noqa: E402

from tests import REPO_ROOT  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

SIZE = 32
MOBILENET = "tsm_mobilenetv2_1x1x8_k400"
# Each seed config of configs/ and the preset of the same MMAction2 row.
SEED_CONFIG_PRESETS = {
    "tsm_r50_1x1x8_50e_kinetics400.yaml": "tsm_r50_1x1x8_k400",
    "tsm_r50_1x1x16_50e_kinetics400.yaml": "tsm_r50_1x1x16_k400",
    "tsm_r50_dense_1x1x8_50e_kinetics400.yaml": "tsm_r50_dense_1x1x8_k400",
    "tsm_r50_nl_dot_product_1x1x8_50e_kinetics400.yaml": "tsm_r50_nl_dot_product_1x1x8_k400",
    "tsm_r50_nl_gaussian_1x1x8_50e_kinetics400.yaml": "tsm_r50_nl_gaussian_1x1x8_k400",
    "tsm_r50_nl_embedded_gaussian_1x1x8_50e_kinetics400.yaml": "tsm_r50_nl_embedded_gaussian_1x1x8_k400",
    "tsm_mobilenetv2_1x1x8_100e_kinetics400.yaml": "tsm_mobilenetv2_1x1x8_k400",
    "tsm_mobileone_s4_1x1x16_50e_kinetics400.yaml": "tsm_mobileone_s4_1x1x16_k400",
    "tsm_r50_1x1x8_50e_sthv2.yaml": "tsm_r50_1x1x8_sthv2",
    "tsm_r50_1x1x16_50e_sthv2.yaml": "tsm_r50_1x1x16_sthv2",
    "tsm_r101_1x1x8_50e_sthv2.yaml": "tsm_r101_1x1x8_sthv2",
}


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def save_mmaction2(network, path):
    torch.save({"state_dict": network.state_dict(), "meta": {"mmengine_version": "0.7.0"}}, path)
    return path


@pytest.fixture(scope="module")
def mobilenet_checkpoint(tmp_path_factory):
    """A random MMAction2 TSM-MobileNetV2 (8 segments, 400 classes) under the zoo's file name."""
    network = ref.randomize(ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=8), 1280, 400), seed=3)
    directory = tmp_path_factory.mktemp("zoo")
    return save_mmaction2(network, directory / presets.get_preset(MOBILENET).file_name)


def serve(monkeypatch, name, path, sha=None):
    """Points preset `name` at `path` (a file:// URL) with the file's real hash prefix."""
    preset = presets.get_preset(name)
    url = pathlib.Path(path).as_uri()
    served = dataclasses.replace(preset, url=url, sha256=sha or sha256(path)[:8])
    monkeypatch.setitem(presets.PRESETS, preset.name, served)
    return served


def clip(segments=8, seed=0):
    return np.random.default_rng(seed).standard_normal((1, segments, SIZE, SIZE, 3)).astype("float32")


def test_download_verifies_imports_and_caches_the_keras_model(mobilenet_checkpoint, monkeypatch, tmp_path):
    preset = serve(monkeypatch, MOBILENET, mobilenet_checkpoint)
    model = tsm_keras.from_preset(MOBILENET, input_shape=(SIZE, SIZE, 3), cache_root=tmp_path)
    cache = tmp_path / "models" / "tsm_keras"
    downloaded = cache / preset.file_name
    assert downloaded.read_bytes() == pathlib.Path(mobilenet_checkpoint).read_bytes()
    assert sorted(os.listdir(cache)) == sorted([preset.file_name, f"{preset.name}_32x32.keras"])
    # The same network as importing the file directly, with the preset's architecture.
    expected = load_torch_checkpoint(mobilenet_checkpoint, input_shape=(SIZE, SIZE, 3))
    np.testing.assert_array_equal(np.asarray(model(clip())), np.asarray(expected(clip())))
    assert model.tsm_config()["num_classes"] == 400 and model.tsm_config()["num_segments"] == 8


def test_cache_is_reused_without_download_or_second_import(mobilenet_checkpoint, monkeypatch, tmp_path):
    preset = serve(monkeypatch, MOBILENET, mobilenet_checkpoint)
    first = TSM.from_preset(preset.alias, input_shape=(SIZE, SIZE, 3), cache_root=tmp_path)
    # No second import, and no network: the URL now points nowhere.
    monkeypatch.setattr(presets, "import_torch_checkpoint", lambda *args, **kwargs: pytest.fail("imported twice"))
    monkeypatch.setitem(presets.PRESETS, preset.name, dataclasses.replace(preset, url="file:///nonexistent.pth"))
    second = tsm_keras.from_preset(preset.name, input_shape=(SIZE, SIZE, 3), cache_root=tmp_path)
    assert isinstance(second, TSM)
    np.testing.assert_array_equal(np.asarray(second(clip(seed=1))), np.asarray(first(clip(seed=1))))


def test_hash_mismatch_is_refused_and_the_download_removed(mobilenet_checkpoint, monkeypatch, tmp_path):
    actual = sha256(mobilenet_checkpoint)[:8]
    wrong = format(int(actual, 16) ^ 0xFFFFFFFF, "08x")
    serve(monkeypatch, MOBILENET, mobilenet_checkpoint, sha=wrong)
    with pytest.raises(presets.PresetError, match=f"SHA-256 {actual}... does not match the expected {wrong}"):
        tsm_keras.from_preset(MOBILENET, input_shape=(SIZE, SIZE, 3), cache_root=tmp_path)
    assert os.listdir(tmp_path / "models" / "tsm_keras") == []
    # A copy given by hand is checked the same way.
    with pytest.raises(presets.PresetError, match="does not match"):
        tsm_keras.from_preset(MOBILENET, checkpoint=mobilenet_checkpoint, cache_root=tmp_path)


def test_offline_failure_is_one_line_naming_the_url_and_the_manual_route(monkeypatch, tmp_path):
    preset = presets.get_preset(MOBILENET)
    missing = (tmp_path / "offline" / preset.file_name).as_uri()
    monkeypatch.setitem(presets.PRESETS, preset.name, dataclasses.replace(preset, url=missing))
    with pytest.raises(presets.PresetError) as raised:
        tsm_keras.from_preset(MOBILENET, cache_root=tmp_path / "cache")
    message = str(raised.value)
    assert "\n" not in message
    assert f"cannot download {missing}" in message
    assert "checkpoint=PATH (--checkpoint PATH)" in message
    assert str(tmp_path / "cache" / "models" / "tsm_keras" / preset.file_name) in message


def test_a_copy_by_hand_works_offline(mobilenet_checkpoint, monkeypatch, tmp_path):
    preset = serve(monkeypatch, MOBILENET, mobilenet_checkpoint)
    monkeypatch.setitem(presets.PRESETS, preset.name, dataclasses.replace(preset, url="file:///nonexistent.pth"))
    model = tsm_keras.from_preset(MOBILENET, checkpoint=mobilenet_checkpoint, input_shape=(SIZE, SIZE, 3),
                                  cache_root=tmp_path)
    assert model.output_shape == (None, 400)


def test_mobileone_preset_imports_with_shifts_over_halves_of_8(monkeypatch, tmp_path):
    """The MobileOne-S4 1x1x16 row: a bare file (no meta config) imports as MMAction2's network."""
    frames = clip(segments=16, seed=2)
    inputs = torch.from_numpy(frames.transpose(0, 1, 4, 2, 3).copy())  # NTHWC -> NTCHW
    network = ref.randomize(ref.MMRecognizer(ref.MMMobileOneTSM("s4", num_segments=8), 2048, 400), seed=5)
    ref.calibrate_batch_norms(network, lambda: network(inputs), seed=5)  # activations of order 1
    name = "tsm_mobileone_s4_1x1x16_k400"
    path = save_mmaction2(network, tmp_path / presets.get_preset(name).file_name)
    serve(monkeypatch, name, path)
    with warnings.catch_warnings():
        # The preset says shift_segments: 8, so the importer has no reason to warn.
        warnings.filterwarnings("error", message=".*two halves of 8 frames")
        model = tsm_keras.from_preset(name, input_shape=(SIZE, SIZE, 3), cache_root=tmp_path / "cache")
    assert model.tsm_config()["backbone_options"]["shift_segments"] == 8
    with torch.no_grad():
        expected = network(inputs).numpy()
    got = np.asarray(model(frames))
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
    # Without the preset, the importer cannot know and says so.
    with pytest.warns(UserWarning, match="two halves of 8 frames"):
        import_torch_checkpoint(path, input_shape=(SIZE, SIZE, 3))


@pytest.mark.parametrize("config_name", sorted(SEED_CONFIG_PRESETS))
def test_every_seed_row_has_a_preset_matching_its_config(config_name):
    config = load_config(REPO_ROOT / "configs" / config_name)
    preset = presets.get_preset(SEED_CONFIG_PRESETS[config_name])
    model, data = config.model, config.data
    spec = preset.spec
    assert (spec.backbone, spec.num_classes, spec.num_segments, spec.shift_div, spec.shift_place,
            spec.non_local, spec.direction) == (model.backbone, model.num_classes, data.num_clips,
                                                model.shift_div, model.shift_place, model.non_local,
                                                model.direction)
    assert spec.backbone_options.get("shift_segments") == model.backbone_options.get("shift_segments")
    for key, value in preset.test_protocol["data"].items():
        assert (data.view_crop_size if key == "test_crop_size" else getattr(data, key)) == value, key
    assert preset.test_protocol["test"]["average"] == config.test.average
    assert preset.label_map == data.label_map and len(preset.class_names()) == spec.num_classes
    assert preset.url.endswith(f"/{preset.name}/{preset.file_name}") and preset.name in preset.file_name
    assert preset.file_name.endswith(f"-{preset.sha256}.pth") and len(preset.sha256) == 8


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds(name):
    preset = presets.get_preset(name)
    model = TSM(preset.spec_for(input_shape=(SIZE, SIZE, 3)))
    assert model.output_shape == (None, preset.spec.num_classes)
    assert model.tsm_config()["num_segments"] == preset.spec.num_segments
    assert model.layout == "torch" and preset.spec.input_shape == (224, 224, 3)
    assert preset.normalization["mean"] == (123.675, 116.28, 103.53)


def test_names_aliases_and_unknown_names():
    names = tsm_keras.list_presets()
    assert len(presets.PRESETS) == 13 and len(names) == 26  # 12 MMAction2 rows + Jester, each with an alias
    for preset in presets.PRESETS.values():
        assert presets.get_preset(preset.alias) is preset and preset.name in names and preset.alias in names
    jester = presets.get_preset("tsm_mobilenetv2_online_jester")
    assert jester.spec.direction == "unidirectional" and jester.class_names()[:2] == ["Doing other things",
                                                                                 "Drumming Fingers"]
    with pytest.raises(presets.PresetError, match="unknown preset 'tsm_r51'; tsm_keras.list_presets"):
        presets.get_preset("tsm_r51")


def zoo_reference(preset, clip):
    """A random PyTorch network of `preset`'s architecture, calibrated on `clip`, as published.

    Returns `(network, file)`: the MMAction2 rows as `Recognizer2D` with its `state_dict`
    (saved without a config, so the preset alone must say what the keys cannot), the authors'
    online model as its demo's bare `state_dict` in the legacy format.
    """
    from tests.convert.parity import make_reference, to_torch

    spec, classes, segments = preset.spec, preset.spec.num_classes, clip.shape[1]
    if spec.direction == "unidirectional":  # the online demo: frame by frame with its buffers
        network = ref.randomize(ref.MitOnlineMobileNetV2(num_classes=classes), seed=23)
        frames = clip[0]
        zeros = [b.expand((segments,) + b.shape[1:]) for b in network.zero_buffers(*frames.shape[1:3])]
        ref.calibrate_batch_norms(network, lambda: network(to_torch(frames), *zeros), seed=23)
        return network, "legacy"
    if spec.backbone == "mobilenet_v2":
        network = ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=segments), 1280, classes)
    elif spec.backbone.startswith("mobileone"):
        shift_segments = spec.backbone_options["shift_segments"]
        network = ref.MMRecognizer(ref.MMMobileOneTSM("s4", num_segments=shift_segments), 2048, classes)
    else:
        depth = int(spec.backbone[len("resnet"):])
        backbone = ref.MMResNetTSM(depth, num_segments=segments, non_local=spec.non_local)
        network = ref.MMRecognizer(backbone, 2048, classes)
    make_reference(network, clip, seed=7)
    # Keep the softmax over raw dot products well conditioned in float32 (as the parity tests).
    if spec.non_local == "gaussian":
        ref.scale_residual_stream(network, 0.1)
    elif spec.non_local is not None:
        ref.scale_non_local(network, 0.3)
    ref.calibrate_batch_norms(network, lambda: network(to_torch(clip)), seed=7)
    return network, "mmaction2"


def online_clip_logits(network, clip):
    """The online demo network's logits averaged over the clip's frames, buffers carried."""
    from tests.convert.parity import to_torch

    buffers, logits = network.zero_buffers(*clip.shape[2:4]), []
    for frame in clip[0]:
        with torch.no_grad():
            frame_logits, *buffers = network(to_torch(frame[None]), *buffers)
        logits.append(frame_logits.numpy()[0])
    return np.mean(logits, axis=0)[None]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_downloads_imports_and_matches_its_pytorch_network(name, monkeypatch, tmp_path):
    """Every row: a file:// copy is fetched, hash-checked, imported once, cached, and gives the
    logits of the PyTorch network it was saved from; a second call reuses the cache."""
    from tests.convert.parity import assert_clip_parity, random_clip, relative_difference

    preset = presets.get_preset(name)
    # 64x64 where 32x32 leaves too few positions (R101's stage 4, a Non-local softmax over 2x2)
    # for the float32 comparison to be well conditioned, as in the parity tests.
    size = 64 if preset.spec.backbone == "resnet101" or preset.spec.non_local else 32
    clip = random_clip(2, preset.spec.num_segments, size, seed=1)
    network, layout = zoo_reference(preset, clip)
    path = tmp_path / preset.file_name
    if layout == "legacy":
        torch.save(network.state_dict(), path, _use_new_zipfile_serialization=False)
    else:
        save_mmaction2(network, path)
    serve(monkeypatch, name, path)
    cache = tmp_path / "cache"
    model = tsm_keras.from_preset(name, input_shape=(size, size, 3), cache_root=cache)
    got, want = model.spec.to_dict(), preset.spec.to_dict()
    # The keys add what the preset need not say (MobileOne's deploy form): the rest is the preset's.
    got_options, want_options = got.pop("backbone_options"), want.pop("backbone_options")
    assert {key: got_options[key] for key in want_options} == want_options
    assert {**got, "input_shape": want["input_shape"]} == want and got["input_shape"] == [size, size, 3]
    if layout == "legacy":
        expected = online_clip_logits(network, clip[:1])
        assert relative_difference(np.asarray(model(clip[:1])), expected) <= 1e-4
    else:
        assert_clip_parity(model, network, clip)
    # The cached .keras is reused: no download, no import.
    path.unlink()
    monkeypatch.setattr(presets, "import_torch_checkpoint", None)
    again = tsm_keras.from_preset(name, input_shape=(size, size, 3), cache_root=cache)
    np.testing.assert_allclose(np.asarray(again(clip[:1])), np.asarray(model(clip[:1])), rtol=1e-6, atol=1e-6)
