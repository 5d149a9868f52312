"""From training to the phone: the online quickstart's commands, run as a user runs them.

From a fresh work dir: train `configs/quickstart_online.yaml`; export its `model.keras` as an
online int8 LiteRT model calibrated on the built-in data; write the held-out videos and stream
one through the model with the history smoothing; benchmark the model with android_bench
(`--host`). Then the int8 online model must classify the held-out clips within 1 point of the
fp32 Keras model (the same views, fed frame by frame with carried states; a uni-directional
TSM's clip logits are the mean of its per-frame logits).

Slow (the training alone is the quickstart's ~6 minutes on 2 idle cores):
`pytest -m slow tests/test_quickstart_online_e2e.py`.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart_online.yaml"
# The quickstart's clips take 8 segments of 24-frame videos: their frames are 3 apart.
FRAME_STEP = 3


def run(*command, cwd):
    """Runs a documented command line; returns its stdout, failing the test with its stderr."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run([sys.executable, *map(str, command)], cwd=cwd, env=environment,
                               capture_output=True, text=True)
    assert completed.returncode == 0, f"{' '.join(map(str, command))}\n{completed.stderr[-3000:]}"
    return completed.stdout


def online_top1(tflite_path, data_config, split="test"):
    """Held-out top-1 of an online LiteRT model on the config's test views, frame by frame."""
    from tsm_keras.data import build_test_dataset
    from tsm_keras.stream import OnlineStream

    stream = OnlineStream(tflite_path, history=1)
    correct = total = 0
    for views, label, _ in build_test_dataset(data_config, split):
        logits = []
        for view in views.numpy():  # (T, H, W, 3), normalised as in training
            stream.reset()
            logits.append(np.mean([stream.step(frame).logits for frame in view], axis=0))
        correct += int(np.argmax(np.mean(logits, axis=0)) == int(label))
        total += 1
    return correct / total


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    home = tmp_path_factory.mktemp("walkthrough")
    work_dir, model = home / "work_dirs" / "quickstart_online", home / "tsm_online_int8.tflite"
    outputs = {"train": run(ROOT / "train" / "fit.py", "--config", CONFIG, "--work-dir", work_dir, cwd=home)}
    outputs["export"] = run(ROOT / "convert" / "to_tflite.py", work_dir / "model.keras", "--mode", "online",
                            "--quant", "int8", "--data-config", CONFIG, "--out", model, cwd=home)
    run("-m", "tsm_keras.cli.synthetic_videos", home / "videos", "--config", CONFIG, "--splits", "test", cwd=home)
    video = home / "videos" / (home / "videos" / "test_list.txt").read_text().split()[0]
    outputs["stream"] = run("-m", "tsm_keras.stream", model, video, "--frame-step", FRAME_STEP, cwd=home)
    outputs["bench"] = run(ROOT / "android_bench" / "run.py", "--host", "--models", model, "--threads", 1,
                           "--runs", 20, "--warmup", 2, "--out", home / "bench", cwd=home)
    return home, work_dir, model, outputs


def test_each_command_leaves_what_the_next_one_reads(walkthrough):
    home, work_dir, model, outputs = walkthrough
    assert (work_dir / "model.keras").is_file() and (work_dir / "best.keras").is_file()
    assert model.is_file() and pathlib.Path(f"{model}.json").is_file()
    frames = [line for line in outputs["stream"].splitlines() if line.startswith("frame ")]
    assert len(frames) == 24 // FRAME_STEP and all(line.rstrip().endswith(" ms") for line in frames)
    assert "final prediction:" in outputs["stream"]
    table = (home / "bench" / "results.md").read_text()
    assert model.name in table


def test_the_int8_online_model_keeps_the_fp32_accuracy(walkthrough):
    from tsm_keras.training.config import load_config

    _, work_dir, model, _ = walkthrough
    fp32 = json.loads((work_dir / "test" / "metrics.json").read_text())["top1"]
    assert fp32 >= 0.9  # the online quickstart's promise
    int8 = online_top1(str(model), load_config(CONFIG).data)
    print(f"held-out top-1: fp32 Keras {fp32:.4f}, int8 online LiteRT {int8:.4f}")
    assert abs(int8 - fp32) <= 0.01
