"""`train/test.py` on a trained checkpoint: metrics, reports and dumps, consistent with `fit`."""

import dataclasses
import importlib.util
import json
import os
import pickle

import keras
import numpy as np
import pytest

from tsm_keras.training.config import Config, load_config
from tsm_keras.training.testing import load_test_model
from tsm_keras.training.trainer import Trainer, build_model

from tests import REPO_ROOT


# Changes to the shared tiny config (tests/conftest.py): 4 classes, 3 test videos each, 3 crops.
CHANGES = {
    "model": {"num_classes": 4},
    "data": {
        "synthetic": {"num_classes": 4, "train_videos_per_class": 4, "test_videos_per_class": 3},
        "test_crop": "three", "test_crop_size": 32,
    },
    "train": {"epochs": 2, "batch_per_replica": 4, "base_batch_size": 4, "seed": 1, "val_interval": 1},
    "checkpoint": {"keep_last": 1, "save_best": True},
    "test": {"average": "prob", "views_per_batch": 6},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config_file):
    tmp_path = tmp_path_factory.mktemp("test_tool")
    config_path = tiny_config_file(tmp_path / "config.yaml", **CHANGES)
    work_dir = tmp_path / "work"
    result = Trainer(load_config(config_path), str(work_dir), verbose=0).fit()
    return config_path, work_dir, result


def test_fit_leaves_the_documented_work_dir(trained):
    _, work_dir, result = trained
    for name in ("config.yaml", "log.csv", "curves.png", "final.weights.h5", "best.weights.h5", "best.json",
                 "model.keras", "best.keras",
                 "test/metrics.json", "test/confusion_matrix.png", "test/per_class.csv"):
        assert (work_dir / name).exists(), name
    assert [name for name in os.listdir(work_dir / "checkpoints")] == ["step-00000008"]  # keep_last 1
    assert os.listdir(work_dir / "tensorboard")
    assert len(result.history) == 2 and result.test_metrics["num_videos"] == 12
    assert result.best_val_top1 is not None


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"train_{name}", os.path.join(REPO_ROOT, "train", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_tool_prints_metrics_and_writes_reports_and_dump(trained, tmp_path, capsys):
    config_path, work_dir, result = trained
    out_dir, dump = tmp_path / "reports", tmp_path / "dump" / "scores.pkl"
    status = load_script("test").main(["--config", str(config_path), "--checkpoint",
                                       str(work_dir / "final.weights.h5"), "--dump", str(dump),
                                       "--out-dir", str(out_dir)])
    assert status == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert f"{key.replace('_', ' ')} {metrics[key]:.4f}" in printed
    assert "12 videos, 1 clip(s) x 3 crop(s), average prob" in printed
    assert (out_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (out_dir / "per_class.csv").read_text().count("\n") == 5
    # Same weights, same protocol: the same numbers as fit's own end-of-training test.
    for key in ("top1", "top5", "mean_class_accuracy", "pair_accuracy"):
        assert metrics[key] == pytest.approx(result.test_metrics[key]), key

    with open(tmp_path / "dump" / "scores.pkl", "rb") as handle:
        records = pickle.load(handle)
    document = json.loads((tmp_path / "dump" / "scores.json").read_text())
    assert len(records) == len(document["results"]) == 12
    scores = np.stack([record["pred_score"] for record in records])
    labels = np.array([record["gt_label"] for record in records])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)  # averaged probabilities
    assert np.mean(scores.argmax(axis=1) == labels) == pytest.approx(metrics["top1"])
    assert sorted(record["video_index"] for record in records) == list(range(12))
    np.testing.assert_allclose([record["pred_score"] for record in document["results"]], scores, rtol=1e-6)


def test_test_tool_in_bfloat16_scores_like_float32(trained, tmp_path):
    """`--precision bfloat16` tests the float32 weights in bfloat16: the averaged probabilities agree closely."""
    config_path, work_dir, _ = trained
    scores = {}
    for precision in ("float32", "bfloat16"):
        dump = tmp_path / precision / "scores.pkl"
        assert load_script("test").main(["--config", str(config_path), "--checkpoint", str(work_dir),
                                         "--precision", precision, "--dump", str(dump),
                                         "--out-dir", str(tmp_path / precision)]) == 0
        with open(dump, "rb") as handle:
            scores[precision] = np.stack([record["pred_score"] for record in pickle.load(handle)])
    assert np.abs(scores["bfloat16"] - scores["float32"]).max() > 0, "both ran in float32"
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], atol=0.02)


def test_test_tool_reads_training_checkpoints_and_work_dirs(trained, tmp_path):
    config_path, work_dir, result = trained
    script = load_script("test")
    for checkpoint in (work_dir / "checkpoints" / "step-00000008", work_dir):
        out_dir = tmp_path / checkpoint.name
        assert script.main(["--config", str(config_path), "--checkpoint", str(checkpoint),
                            "--out-dir", str(out_dir)]) == 0
        metrics = json.loads((out_dir / "metrics.json").read_text())
        assert metrics["top1"] == pytest.approx(result.test_metrics["top1"])
    assert script.main(["--config", str(config_path), "--checkpoint", str(tmp_path / "nope.weights.h5")]) == 2


def test_test_tool_on_another_split_says_so_and_keeps_the_run_report(trained, capsys):
    config_path, work_dir, _ = trained
    run_report = (work_dir / "test" / "metrics.json").read_text()
    assert load_script("test").main(["--config", str(config_path), "--checkpoint", str(work_dir),
                                     "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Test on val = built-in synthetic dataset (8 videos")  # 4 classes x 2 val videos
    metrics = json.loads((work_dir / "test_val" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_videos"] == 8
    assert (work_dir / "test" / "metrics.json").read_text() == run_report


def test_report_folder_names_what_is_tested(tiny_config):
    from tsm_keras.cli.test import report_name

    trained = Config.from_dict(tiny_config(data={"source": "video", "train_list": "lists/train.txt",
                                                 "test_list": "lists/test.txt"}))
    assert report_name(trained, trained, "test") == "test"
    assert report_name(trained, trained, "val") == "test_val"  # no val list: the split names it
    other = dataclasses.replace(trained, data=trained.data.replace(test_list="lists/hard_cases.txt"))
    assert report_name(trained, other, "test") == "test_hard_cases"


def test_quiet_training_keeps_summary_epochs_validation_and_test(tmp_path, capsys, tiny_config_file):
    """`--quiet` drops only the progress bars; off a terminal the epochs are plain lines."""
    from tsm_keras.cli.train import main

    config_path = tiny_config_file(tmp_path / "config.yaml", **{**CHANGES, "checkpoint": {"save_best": False}})
    assert main(["--config", str(config_path), "--work-dir", str(tmp_path / "work"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "\r" not in printed and "\x1b" not in printed
    lines = printed.splitlines()
    assert lines[0].startswith("TSM mobilenet_v2: ")
    assert [line.split(":")[0] for line in lines if line.startswith("Epoch ")] == ["Epoch 1/2", "Epoch 2/2"]
    assert sum(line.startswith("  val: top1 ") for line in lines) == 2  # val_interval 1
    assert any(line.startswith("Test on test = built-in synthetic dataset (12 videos") for line in lines)
    assert lines[-1] == f"Work dir: {tmp_path / 'work'}"


@pytest.mark.parametrize("model_name, weights_name", [("model.keras", "final.weights.h5"),
                                                      ("best.keras", "best.weights.h5")])
def test_saved_models_load_in_safe_mode_with_the_trained_weights(trained, model_name, weights_name):
    config_path, work_dir, result = trained
    loaded = keras.saving.load_model(work_dir / model_name, compile=False)  # safe_mode=True by default
    reference = build_model(load_config(config_path))
    reference.load_weights(work_dir / weights_name)
    clips = np.random.default_rng(0).uniform(-2, 2, size=(2, *reference.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(loaded.predict(clips, verbose=0), reference.predict(clips, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert result.final_model == str(work_dir / "model.keras") and result.best_model == str(work_dir / "best.keras")


def test_test_tool_reads_a_saved_model(trained, tmp_path):
    config_path, work_dir, result = trained
    script = load_script("test")
    out_dir = tmp_path / "from_keras"
    assert script.main(["--config", str(config_path), "--checkpoint", str(work_dir / "model.keras"),
                        "--out-dir", str(out_dir)]) == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert metrics[key] == pytest.approx(result.test_metrics[key]), key
    # A saved model of another architecture is refused, naming the file.
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(other)
    with pytest.raises(ValueError, match="other.keras: the saved model's weights"):
        load_test_model(load_config(config_path), other)
