"""Distribution strategies: one device, local replicas, several workers.

All three run the same custom training loop (`tsm_keras.training.trainer`):
Keras 3 `model.fit` does not work under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), and one training path is easier to trust than two.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices (before TF starts).

    `MirroredStrategy` then mirrors over them on a machine without GPUs, which
    is how the multi-replica path is tested on CPU.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(num_devices))]
    )


def make_strategy(name="default"):
    """The `tf.distribute.Strategy` called `name`.

    Args:
        name: `"default"` (one device), `"mirrored"` (every local GPU, or
            every logical CPU device when there is no GPU) or
            `"multi_worker"` (`MultiWorkerMirroredStrategy` configured by the
            `TF_CONFIG` environment variable).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable (cluster spec)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def worker_info(strategy):
    """`(worker_index, num_workers)` of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1
    task_type, task_id = resolver.task_type, resolver.task_id
    workers = resolver.cluster_spec().as_dict()
    num_workers = len(workers.get("worker", ())) + len(workers.get("chief", ()))
    if task_type == "chief":
        return 0, num_workers
    offset = 1 if "chief" in workers else 0
    return int(task_id) + offset, num_workers


def is_chief(strategy):
    """True for the process that writes logs, reports and checkpoints."""
    return worker_info(strategy)[0] == 0


def tf_config(worker_addresses, index):
    """`TF_CONFIG` JSON for worker `index` of a cluster of `worker_addresses`."""
    return json.dumps({"cluster": {"worker": list(worker_addresses)}, "task": {"type": "worker", "index": index}})
