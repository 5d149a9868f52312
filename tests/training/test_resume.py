"""Crash-safe training: SIGKILL mid-epoch, `--resume`, same result as an uninterrupted run.

A deterministic run (seed, op determinism, dropout on, flips on, a checkpoint
every step) is killed with SIGKILL in the middle of its first epoch and resumed
with `train/fit.py --resume`; its final weights and per-epoch log must equal an
uninterrupted run of the same config bit for bit: the checkpoint restores the
weights, BatchNorm statistics, dropout seed state, momentum buffers and step
counter (hence the lr), and the input pipeline is rebuilt for the epoch from
its seed and advanced by the steps already taken.
"""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from tsm_keras.training.checkpoint import latest_checkpoint, list_checkpoints

from tests import REPO_ROOT

FIT = os.path.join(REPO_ROOT, "train", "fit.py")
STEPS_PER_EPOCH = 6

# Changes to the shared tiny config (tests/conftest.py): dropout and flips on, a checkpoint every step.
CHANGES = {
    "model": {"dropout": 0.5},
    "data": {"flip": True},
    "schedule": {"milestones": [1], "warmup_epochs": 0.5},
    "train": {"epochs": 2, "batch_per_replica": 2, "base_batch_size": 2, "steps_per_epoch": STEPS_PER_EPOCH,
              "seed": 5, "deterministic": True, "val_interval": 0},
    "checkpoint": {"interval_steps": 1, "interval_epochs": 1, "keep_last": 2, "save_best": False},
}


def fit(config_path, work_dir, *extra):
    command = [sys.executable, FIT, "--config", str(config_path), "--work-dir", str(work_dir), "--no-test",
               "--quiet", *extra]
    return subprocess.Popen(command, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


def read_log(work_dir):
    with open(os.path.join(work_dir, "log.csv"), newline="") as handle:
        return [{key: row[key] for key in ("epoch", "global_step", "loss", "top1", "lr")}
                for row in csv.DictReader(handle)]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_config_file):
    config_path = tiny_config_file(tmp_path / "config.yaml", **CHANGES)
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = fit(config_path, reference_dir)
    victim = fit(config_path, killed_dir)

    # Kill the victim as soon as it has written its second checkpoint (epoch 1, step 2 of 6).
    checkpoints = killed_dir / "checkpoints"
    deadline = time.monotonic() + 600
    while not (checkpoints / "step-00000002").is_dir():
        assert victim.poll() is None, victim.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL

    resumed_from = latest_checkpoint(str(checkpoints))
    with open(os.path.join(resumed_from, "state.json")) as handle:
        state = json.load(handle)
    assert state["epoch"] == 0 and 0 < state["step_in_epoch"] < STEPS_PER_EPOCH, state  # mid-epoch
    assert not (killed_dir / "final.weights.h5").exists()

    output = finish(fit(config_path, killed_dir, "--resume"))
    finish(reference)

    expected, actual = h5_arrays(reference_dir / "final.weights.h5"), h5_arrays(killed_dir / "final.weights.h5")
    assert expected.keys() == actual.keys() and len(expected) > 100
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    assert read_log(killed_dir) == read_log(reference_dir)
    assert len(read_log(reference_dir)) == 2, output


def test_resume_ignores_partial_checkpoints(tmp_path):
    """A directory still being written (temporary name, or no state.json) is never picked up."""
    complete = tmp_path / "step-00000004"
    complete.mkdir()
    (complete / "state.json").write_text("{}")
    (tmp_path / ".tmp-step-00000006-abc").mkdir()  # killed while writing step 6
    (tmp_path / "step-00000005").mkdir()  # no state.json: not complete
    (tmp_path / "step-0000000x").mkdir()
    assert latest_checkpoint(str(tmp_path)) == str(complete)
    assert list_checkpoints(str(tmp_path)) == [str(complete)]
    assert latest_checkpoint(str(tmp_path / "missing")) is None


def test_fresh_run_refuses_a_work_dir_with_checkpoints(tmp_path, tiny_config_file):
    """Without --resume, an existing run is never silently overwritten or mixed with a new one."""
    config_path = tiny_config_file(tmp_path / "config.yaml", **CHANGES)
    step = tmp_path / "work" / "checkpoints" / "step-00000003"
    step.mkdir(parents=True)
    (step / "state.json").write_text("{}")
    spec = importlib.util.spec_from_file_location("train_fit", FIT)
    fit_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit_script)
    assert fit_script.main(["--config", str(config_path), "--work-dir", str(tmp_path / "work"), "--quiet"]) == 2
    assert os.listdir(tmp_path / "work") == ["checkpoints"]
