"""`convert/import_torch.py`: checkpoint in, `.keras` model and sidecars out."""

import importlib.util
import json

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests import REPO_ROOT  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

from tsm_keras.convert import load_torch_checkpoint  # noqa: E402

SCRIPT = REPO_ROOT / "convert" / "import_torch.py"


def load_script():
    spec = importlib.util.spec_from_file_location("import_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    network = ref.randomize(ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=2), 1280, 3), seed=4)
    path = tmp_path_factory.mktemp("zoo") / "tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x2-100e_k3-rgb.pth"
    meta = {"dataset_meta": {"classes": ["archery", "bowling", "juggling"]}}
    torch.save({"state_dict": network.state_dict(), "meta": meta}, path)
    return path


def test_cli_writes_a_loadable_model_and_its_sidecars(checkpoint, tmp_path):
    out = tmp_path / "models" / "tsm.keras"
    status = load_script().main([str(checkpoint), "--out", str(out), "--input-size", "40x48"])
    assert status == 0
    model = keras.saving.load_model(out)
    expected = load_torch_checkpoint(checkpoint, input_shape=(40, 48, 3))
    clip = np.random.default_rng(0).standard_normal((1, 2, 40, 48, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(clip)), np.asarray(expected(clip)))
    assert model.tsm_config()["num_segments"] == 2 and model.tsm_config()["layout"] == "torch"

    summary = json.loads((tmp_path / "models" / "tsm.import.json").read_text())
    assert summary["source"] == "mmaction2"
    assert summary["inferred"]["num_segments"] == "file name"
    assert summary["normalization"]["mean"] == [123.675, 116.28, 103.53]
    assert summary["tensors_used"] > 0 and summary["dropped_keys"] > 0
    labels = (tmp_path / "models" / "tsm.labels.txt").read_text().split()
    assert labels == ["archery", "bowling", "juggling"]


def test_cli_reports_a_mismatch_and_writes_nothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "tsm.keras"
    status = load_script().main([str(checkpoint), "--out", str(out), "--arch", "resnet50"])
    assert status == 1
    assert "holds 'mobilenet_v2'" in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_bad_arguments(checkpoint, tmp_path, capsys):
    assert load_script().main([str(checkpoint), "--out", str(tmp_path / "model.h5")]) == 2
    assert capsys.readouterr().err == "tsm-import: error: --out must end with .keras, got '%s'\n" % (tmp_path / "model.h5")
    assert load_script().main([str(checkpoint), "--out", str(tmp_path / "m.keras"), "--input-size", "big"]) == 2
    assert "--input-size must be S or HxW" in capsys.readouterr().err
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--direction", "sideways", "--direction: expected one of ['bidirectional', 'unidirectional'], got 'sideways'"),
    ("--non-local", "cosine",
     "--non-local: expected one of ['dot_product', 'gaussian', 'embedded_gaussian'] or null, got 'cosine'"),
    ("--num-segments", "0", "--num-segments: expected a positive int, got 0"),
])
def test_cli_refuses_a_value_the_spec_refuses_on_one_line(checkpoint, tmp_path, capsys, flag, value, message):
    out = tmp_path / "m.keras"
    assert load_script().main([str(checkpoint), "--out", str(out), flag, value]) == 2
    assert capsys.readouterr().err == f"tsm-import: error: {message}\n"
    assert not out.exists()


def test_cli_refuses_an_unregistered_arch_listing_the_registered_backbones(checkpoint, tmp_path, capsys):
    from tsm_keras.models.backbones import BACKBONES

    assert load_script().main([str(checkpoint), "--out", str(tmp_path / "m.keras"), "--arch", "resnet51"]) == 2
    err = capsys.readouterr().err
    assert err == f"tsm-import: error: --arch: expected one of {sorted(BACKBONES)}, got 'resnet51'\n"


def test_cli_spec_flags_name_spec_fields():
    from tsm_keras.cli.import_torch import SPEC_FLAGS, build_parser
    from tsm_keras.models.spec import TSMSpec

    destinations = {action.dest for action in build_parser()._actions}
    assert set(SPEC_FLAGS) <= destinations and set(SPEC_FLAGS.values()) <= set(TSMSpec.field_names())


def test_cli_source_choices_are_the_importers():
    from tsm_keras.cli.import_torch import SOURCES
    from tsm_keras.weights import SOURCES as IMPORTER_SOURCES

    assert set(SOURCES) == {"auto"} | (set(IMPORTER_SOURCES) - {"torchvision"})


def test_cli_imports_a_preset_from_the_cache_or_a_copy_by_hand(tmp_path, monkeypatch, capsys):
    import dataclasses
    import hashlib

    from tsm_keras import presets

    name = "tsm_mobilenetv2_1x1x8_k400"
    preset = presets.get_preset(name)
    network = ref.randomize(ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=8), 1280, 400), seed=6)
    copy = tmp_path / "by_hand" / preset.file_name
    copy.parent.mkdir()
    torch.save({"state_dict": network.state_dict()}, copy)
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()[:8]
    # Offline: the URL points nowhere; the copy by hand is checked against the preset's hash.
    monkeypatch.setitem(presets.PRESETS, preset.name,
                        dataclasses.replace(preset, url=(tmp_path / "offline.pth").as_uri(), sha256=sha))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    out = tmp_path / "models" / "preset.keras"
    status = load_script().main(["--preset", preset.alias, "--checkpoint", str(copy), "--out", str(out),
                                 "--input-size", "32"])
    assert status == 0
    model = keras.saving.load_model(out)
    expected = load_torch_checkpoint(copy, input_shape=(32, 32, 3))
    clip = np.random.default_rng(1).standard_normal((1, 8, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(clip)), np.asarray(expected(clip)))
    summary = json.loads((tmp_path / "models" / "preset.import.json").read_text())
    assert summary["preset"] == preset.name and summary["test_protocol"]["data"]["test_crop"] == "three"
    labels = (tmp_path / "models" / "preset.labels.txt").read_text().splitlines()
    assert len(labels) == 400 and labels[0] == "abseiling"
    # Without the copy the download fails: one line naming the URL, exit status 1.
    capsys.readouterr()
    assert load_script().main(["--preset", name, "--out", str(tmp_path / "other.keras"),
                               "--input-size", "48"]) == 1
    error = capsys.readouterr().err
    assert "cannot download file://" in error and "offline.pth" in error and "--checkpoint PATH" in error
    assert load_script().main(["--preset", name, "--out", str(out), "--num-segments", "16"]) == 2
    assert capsys.readouterr().err == "tsm-import: error: --preset fixes the architecture; drop --num-segments\n"
