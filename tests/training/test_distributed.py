"""The one training loop under MirroredStrategy and MultiWorkerMirroredStrategy.

Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, one CPU replica
each) train 3 steps; one process with two logical CPU devices (MirroredStrategy)
trains the same steps with the same global batch. Global replica `i` reads shard
`i` in both layouts, so both see the same clips per replica.

- The two workers must end bitwise identical (every variable, BatchNorm
  statistics included): they apply the same all-reduced gradients and
  re-synchronise at the epoch end.
- Against the single process: the losses of the first two steps agree to
  1e-5 relative, and after the first step (same weights, same clips, one gradient) the two
  models differ by at most 1% of the step. Not exactly: the gradient of a
  randomly initialised deep network is ill-conditioned, and the two layouts
  run differently fused kernels that sum in another order; measured, one
  replica's gradient differs by 0.24% between the two processes (mostly in
  the first layers), and the same gradient differs by ~1e-2 in the stem
  between eager and graph execution in one process. That sensitivity
  compounds over steps (~12% after 3 steps), so later weights are only
  compared between the two workers, bitwise. Clipping is off here so that a
  gradient-scale bug cannot hide behind it; clipping under replicas has its
  own test.

This file doubles as the worker script (`python tests/training/test_distributed.py
--role ...`), run in subprocesses because TensorFlow's device layout and
cluster are fixed per process.
"""

import argparse
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import REPO_ROOT


# Changes to the shared tiny config (tests/conftest.py).
TINY_CHANGES = {
    "data": {"num_parallel_calls": 1},
    # No clipping here, so a gradient-scale bug (e.g. gradients summed twice) shows up as a
    # larger step; lr small enough that the trajectories stay comparable (module docstring).
    # Clipping under replicas has its own test below.
    "optimizer": {"lr": 0.001, "clip_grad_norm": None},
    # 3 epochs of 1 step: log.csv holds the loss of every step, checkpoints/step-1 the weights
    # after the first step.
    "train": {"epochs": 3, "batch_per_replica": 2, "base_batch_size": 4, "steps_per_epoch": 1, "seed": 3,
              "deterministic": True, "val_interval": 0},
    "checkpoint": {"save_best": False, "interval_epochs": 1, "keep_last": 3},
}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def run_role(role, config_path, work_dir, out_path, env=None):
    command = [sys.executable, os.path.abspath(__file__), "--role", role, "--config", config_path,
               "--work-dir", work_dir, "--out", out_path]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT), **(env or {}))
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config_file):
    """Two multi-worker processes and one mirrored process, run once for this module."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    config_path = tiny_config_file(tmp_path / "tiny.yaml", **TINY_CHANGES)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(run_role("multi_worker", str(config_path), str(tmp_path / "multi_worker"),
                                  str(tmp_path / f"worker{index}.npz"), {"TF_CONFIG": tf_config}))
    processes.append(run_role("mirrored", str(config_path), str(tmp_path / "mirrored"),
                              str(tmp_path / "mirrored.npz")))
    for process in processes:
        finish(process)
    results = {name: np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "mirrored", "clip")}
    return dict(results, dir=tmp_path)


def test_two_workers_match_each_other_and_one_process(runs):
    worker0, worker1, mirrored = runs["worker0"], runs["worker1"], runs["mirrored"]
    names = [name for name in worker0.files if name.startswith("var")]
    # Both workers hold the same model after 3 steps (every variable, BatchNorm statistics
    # included) and the same 3 steps were taken everywhere.
    assert names and names == [name for name in worker1.files if name.startswith("var")]
    assert int(mirrored["replicas"]) == 2 and int(worker0["replicas"]) == 2
    assert int(worker0["iterations"]) == int(worker1["iterations"]) == int(mirrored["iterations"]) == 3
    for name in names:
        np.testing.assert_array_equal(worker0[name], worker1[name], err_msg=name)
    # ...which is the single process's, to the stated tolerance. After the first step (same
    # weights, same clips, one gradient) the difference must be a small fraction of the step
    # (wrong shards or gradients summed twice make it as large as the step itself).
    trained = sorted(name for name in names if f"init_{name}" in mirrored.files)
    assert trained
    first = {}
    for run in ("multi_worker", "mirrored"):
        reader = tf.train.load_checkpoint(str(runs["dir"] / run / "checkpoints" / "step-00000001" / "ckpt"))
        first[run] = {name: reader.get_tensor(f"model_variables/{int(name[3:7])}/.ATTRIBUTES/VARIABLE_VALUE")
                      for name in trained}
    step = _distance(first["mirrored"], {name: mirrored[f"init_{name}"] for name in trained})
    difference = _distance(first["multi_worker"], first["mirrored"])
    print(f"after one step: |multi-worker - mirrored| / |step| = {difference / step:.3g}")
    assert 0 < step and difference <= 0.01 * step
    # The loss of the first two steps: at the shared initial weights, then at the weights
    # compared above (later steps inherit the compounding difference).
    assert len(mirrored["loss"]) == 3 and np.all(np.isfinite(mirrored["loss"]))
    np.testing.assert_allclose(worker0["loss"][:2], mirrored["loss"][:2], rtol=1e-5)


def _distance(first, second):
    return math.sqrt(sum(np.sum((np.asarray(first[name], np.float64) - second[name]) ** 2) for name in first))


def test_mirrored_clipping_uses_the_global_gradient(runs):
    """Two replicas, a clip norm that binds: the update equals one device's on the whole batch."""
    result = runs["clip"]
    assert result["norm"] > 2.0 * result["clip"]  # clipping is active
    np.testing.assert_allclose(result["mirrored"], result["single"], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- worker side
def _worker(args):
    from tsm_keras.training import distribute

    if args.role == "mirrored":
        distribute.split_cpu(2)
    from tsm_keras.training.config import load_config
    from tsm_keras.training.trainer import Trainer

    config = load_config(args.config)
    trainer = Trainer(config, args.work_dir, strategy=args.role, verbose=0, test_at_end=False)
    trainer.fit()
    arrays = {f"var{index:04d}_{variable.path}": variable.numpy() for index, variable in
              enumerate(trainer.model.variables)}
    # Every replica copy inside this process is identical too.
    for variable in trainer.model.variables:
        copies = getattr(variable.value, "values", (variable.value,))
        for copy in copies[1:]:
            np.testing.assert_array_equal(copies[0].numpy(), copy.numpy(), err_msg=variable.path)
    arrays["replicas"] = np.array(trainer.num_replicas)
    if args.role == "mirrored":  # the shared initial weights (same seed, same initialisers)
        import keras

        from tsm_keras.training.trainer import build_model

        keras.utils.set_random_seed(config.train.seed)
        initial = build_model(config)
        for index, variable in enumerate(initial.variables):
            if variable.trainable:
                arrays[f"init_var{index:04d}_{variable.path}"] = variable.numpy()
    arrays["iterations"] = np.array(int(trainer.optimizer.iterations.numpy()))
    if trainer.is_chief:  # the loss is all-reduced: the chief's log holds the global value
        import csv

        with open(os.path.join(args.work_dir, "log.csv"), newline="") as handle:
            arrays["loss"] = np.array([float(row["loss"]) for row in csv.DictReader(handle)])
    np.savez(args.out, **arrays)
    if args.role == "mirrored":
        _clip_check(os.path.join(os.path.dirname(args.out), "clip.npz"))


def _clip_check(out):
    import keras
    import tensorflow as tf

    from tsm_keras.training.optimizer import GroupedSGD, all_reduce_gradients

    clip = 0.05
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(8, 5)).astype("float32")
    targets = rng.normal(size=(8, 3)).astype("float32")
    initial = [rng.normal(size=(5, 3)).astype("float32"), np.zeros(3, "float32")]

    def build():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="dense")])
        model.set_weights(initial)
        optimizer = GroupedSGD(0.1, momentum=0.9, weight_decay=0.01, global_clipnorm=clip)
        optimizer.build(model.trainable_variables)
        return model, optimizer

    def replica_step(model, optimizer, x, y, global_batch):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(tf.reduce_sum((model(x) - y) ** 2, axis=-1),
                                              global_batch_size=global_batch)
        gradients = all_reduce_gradients(tape.gradient(loss, model.trainable_variables))
        optimizer.apply(gradients, model.trainable_variables)
        return tf.linalg.global_norm(gradients)

    single_model, single_optimizer = build()
    norm = replica_step(single_model, single_optimizer, inputs, targets, 8)
    # A second MirroredStrategy in this process: reduce without collectives, whose instance
    # keys would collide with the trainer's strategy.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model, optimizer = build()
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(8))

    @tf.function
    def step(batch):
        strategy.run(lambda x, y: replica_step(model, optimizer, x, y, 8), args=batch)

    for batch in dataset:
        step(batch)
    np.savez(out, mirrored=model.get_weights()[0], single=single_model.get_weights()[0],
             norm=float(norm), clip=clip)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=("multi_worker", "mirrored"), required=True)
    parser.add_argument("--config")
    parser.add_argument("--work-dir")
    parser.add_argument("--out")
    sys.path.insert(0, str(REPO_ROOT))
    _worker(parser.parse_args())
