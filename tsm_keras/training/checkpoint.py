"""Atomic, resumable training checkpoints.

A checkpoint is a directory `step-{global step:08d}/` holding a TensorFlow
checkpoint of every model variable (weights, BatchNorm statistics, dropout
seed state) and every optimizer variable (momentum buffers, iteration count,
loss scale), plus `state.json` (epoch, position in the epoch, input seed,
best validation score, the variable paths). It is written under a temporary
name and renamed into place only once complete, so a process killed at any
moment leaves either the previous checkpoints or a complete new one; stray
temporary directories are ignored (and removed by the next save).
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

PREFIX = "step-"
STATE_FILE = "state.json"
CHECKPOINT_NAME = "ckpt"


def _fsync_directory(path):
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(path):
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(root)


def list_checkpoints(directory):
    """Complete checkpoint directories in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and os.path.isfile(
            os.path.join(path, STATE_FILE)
        ):
            found.append((int(name[len(PREFIX):]), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory):
    """The newest complete checkpoint in `directory`, or None."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def read_state(path):
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as handle:
        return json.load(handle)


class CheckpointManager:
    """Writes and restores the full training state of a model and optimizer.

    Args:
        directory: where `step-*` checkpoints go (created on first save).
        model: the Keras model being trained.
        optimizer: its (built) Keras optimizer.
        keep_last: number of checkpoints kept; older ones are deleted.
        is_chief: only the chief writes to `directory`; the other workers of
            a multi-worker run write the same collective checkpoint to a
            private temporary directory and delete it (TensorFlow requires
            every worker to take part in saving).

    Example:

    >>> manager = CheckpointManager("work/checkpoints", model, optimizer)
    >>> path = manager.save(global_step=100, state={"epoch": 1})
    >>> manager.restore(path)["epoch"]
    1
    """

    def __init__(self, directory, model, optimizer, keep_last=3, is_chief=True):
        self.directory = os.fspath(directory)
        self.model = model
        self.optimizer = optimizer
        self.keep_last = int(keep_last)
        self.is_chief = is_chief
        self._checkpoint = tf.train.Checkpoint(
            model_variables=[variable.value for variable in model.variables],
            optimizer_variables=[variable.value for variable in optimizer.variables],
        )

    def variable_paths(self):
        return {
            "model": [variable.path for variable in self.model.variables],
            "optimizer": [variable.path for variable in self.optimizer.variables],
        }

    def save(self, global_step, state):
        """Writes checkpoint `step-{global_step}` atomically; returns its path."""
        final = os.path.join(self.directory, f"{PREFIX}{int(global_step):08d}")
        state = dict(state, global_step=int(global_step), variables=self.variable_paths())
        if self.is_chief:
            os.makedirs(self.directory, exist_ok=True)
            temporary = tempfile.mkdtemp(prefix=f".tmp-{PREFIX}{int(global_step):08d}-", dir=self.directory)
        else:
            temporary = tempfile.mkdtemp(prefix="tsm-worker-checkpoint-")
        try:
            self._checkpoint.write(os.path.join(temporary, CHECKPOINT_NAME))
            if not self.is_chief:
                return None
            with open(os.path.join(temporary, STATE_FILE), "w", encoding="utf-8") as handle:
                json.dump(state, handle, indent=1)
            _fsync_tree(temporary)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(temporary, final)
            _fsync_directory(self.directory)
            temporary = None
            self._prune()
            return final
        finally:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)

    def restore(self, path):
        """Restores model and optimizer from checkpoint `path`; returns its state."""
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, STATE_FILE)):
            raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_FILE})")
        state = read_state(path)
        saved, current = state.get("variables", {}), self.variable_paths()
        for group in ("model", "optimizer"):
            if group in saved and saved[group] != current[group]:
                mismatch = next(
                    (f"{a!r} vs {b!r}" for a, b in zip(saved[group], current[group]) if a != b),
                    f"{len(saved[group])} vs {len(current[group])} variables",
                )
                raise ValueError(
                    f"{path}: checkpoint {group} variables differ from this run's "
                    f"(first difference: saved {mismatch}); was it written with another config?"
                )
        self._checkpoint.read(os.path.join(path, CHECKPOINT_NAME)).assert_consumed()
        return state

    def _prune(self):
        for path in list_checkpoints(self.directory)[: -self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)
        for name in os.listdir(self.directory):
            if name.startswith(f".tmp-{PREFIX}"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
