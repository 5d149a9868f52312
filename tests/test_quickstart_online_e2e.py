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

from tests import REPO_ROOT

pytestmark = pytest.mark.slow

CONFIG = REPO_ROOT / "configs" / "quickstart_online.yaml"
# The quickstart's clips take 8 segments of 24-frame videos: their frames are 3 apart.
FRAME_STEP = 3


def run(command, *arguments, cwd):
    """Runs an installed `tsm-*` command as the README writes it; returns its stdout.

    The console scripts are installed next to the interpreter (`pip install -e .`), which is
    where they are looked up, so the test does not depend on PATH.
    """
    executable = pathlib.Path(sys.executable).parent / command
    assert executable.is_file(), f"{command} is not installed beside {sys.executable} (pip install -e .)"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run([str(executable), *map(str, arguments)], cwd=cwd, env=environment,
                               capture_output=True, text=True)
    assert completed.returncode == 0, f"{command} {' '.join(map(str, arguments))}\n{completed.stderr[-3000:]}"
    return completed.stdout


def online_top1(tflite_path, data_config, split="test"):
    """Held-out top-1 of an online LiteRT model on the config's test views, frame by frame."""
    from tsm_keras.data import build_test_dataset
    from tsm_keras.inference.stream import OnlineStream

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
    # The README's four commands ("From training to the phone"), from a fresh directory.
    outputs = {"train": run("tsm-train", "--config", CONFIG, cwd=home)}
    outputs["export"] = run("tsm-export", work_dir / "model.keras", "--mode", "online", "--quant", "int8",
                            "--data-config", CONFIG, "--check", "--out", model.name, cwd=home)
    run("tsm-make-videos", "videos", "--config", CONFIG, "--splits", "test", cwd=home)
    video = home / "videos" / (home / "videos" / "test_list.txt").read_text().split()[0]
    outputs["stream"] = run("tsm-stream", model.name, video, "--frame-step", FRAME_STEP, cwd=home)
    outputs["bench"] = run("tsm-android-bench", "--host", "--models", model.name, "--threads", 1,
                           "--runs", 20, "--warmup", 2, "--out", "bench_host", cwd=home)
    return home, work_dir, model, outputs


def test_each_command_leaves_what_the_next_one_reads(walkthrough):
    home, work_dir, model, outputs = walkthrough
    assert (work_dir / "model.keras").is_file() and (work_dir / "best.keras").is_file()
    assert model.is_file() and pathlib.Path(f"{model}.json").is_file()
    frames = [line for line in outputs["stream"].splitlines() if line.startswith("frame ")]
    assert len(frames) == 24 // FRAME_STEP and all(line.rstrip().endswith(" ms") for line in frames)
    assert "final prediction:" in outputs["stream"]
    table = (home / "bench_host" / "results.md").read_text()
    assert model.name in table


def test_the_int8_online_model_keeps_the_fp32_accuracy(walkthrough):
    from tsm_keras.training.config import load_config

    _, work_dir, model, _ = walkthrough
    fp32 = json.loads((work_dir / "test" / "metrics.json").read_text())["top1"]
    assert fp32 >= 0.9  # the online quickstart's promise
    int8 = online_top1(str(model), load_config(CONFIG).data)
    print(f"held-out top-1: fp32 Keras {fp32:.4f}, int8 online LiteRT {int8:.4f}")
    assert abs(int8 - fp32) <= 0.01
