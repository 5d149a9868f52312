"""What a training run shows and leaves behind: progress, CSV, TensorBoard, curves."""

import csv
import importlib.util
import os
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

LOG_FIELDS = (
    "epoch",
    "global_step",
    "loss",
    "top1",
    "lr",
    "clips_per_s",
    "epoch_time_s",
    "val_top1",
    "val_top5",
    "val_mean_class_accuracy",
)


class EpochProgress:
    """A Keras progress bar (or one line) for one epoch: loss, top1, lr and clips/s.

    Loss and top-1 are the running means over the epoch (computed by the
    trainer, so a resumed epoch shows the same numbers); lr is the current
    one; clips/s counts clips (all replicas) since the start of the bar.

    Args:
        epoch: 0-based epoch index.
        epochs: total epochs.
        steps: steps in the epoch.
        start_step: first step (non-zero when resuming inside the epoch).
        global_batch: clips per step over all replicas.
        verbose: 0 silent, 1 progress bar, 2 one plain line per epoch (as
            Keras' `fit`). A bar on a stdout that is not a terminal (a file,
            a pipe) becomes the plain line: no carriage returns, no ANSI codes.
    """

    def __init__(self, epoch, epochs, steps, start_step, global_batch, verbose=1):
        if verbose == 1 and not _interactive_stdout():
            verbose = 2
        self.verbose = verbose
        self.global_batch = global_batch
        self.start_step = start_step
        self.steps = steps
        self.start_time = time.perf_counter()
        self.clips_per_s = 0.0
        self.title = f"Epoch {epoch + 1}/{epochs}" + (f" (resumed at step {start_step})" if start_step else "")
        self.bar = None
        if verbose == 1:
            print(self.title)
            self.bar = keras.utils.Progbar(
                steps, verbose=verbose, stateful_metrics=["loss", "top1", "lr", "clips/s"], unit_name="step"
            )
            if start_step:
                self.bar.update(start_step)

    def update(self, step, loss, top1, lr):
        """`step` is the number of finished steps in the epoch."""
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        self.clips_per_s = (step - self.start_step) * self.global_batch / elapsed
        values = [("loss", loss), ("top1", top1), ("lr", lr), ("clips/s", self.clips_per_s)]
        if self.bar is not None:
            self.bar.update(step, values=values)
        elif self.verbose and step == self.steps:
            shown = "  ".join(f"{name} {value:.4g}" for name, value in values)
            print(f"{self.title}: {self.steps} steps, {shown}, {elapsed:.1f} s", flush=True)

    @property
    def elapsed(self):
        return time.perf_counter() - self.start_time


def _interactive_stdout():
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


class CSVLog:
    """`log.csv`: one row per epoch (see `LOG_FIELDS`).

    On resume, rows of epochs after the checkpoint's are dropped so that a
    re-run epoch is not listed twice.
    """

    def __init__(self, path, resume_epoch=None):
        self.path = os.fspath(path)
        rows = self.read(self.path) if resume_epoch is not None and os.path.exists(self.path) else []
        rows = [row for row in rows if int(row["epoch"]) <= resume_epoch] if rows else []
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row):
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS)
            writer.writerow({key: _format(row.get(key)) for key in LOG_FIELDS})
            handle.flush()
            os.fsync(handle.fileno())

    @staticmethod
    def read(path):
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class TensorBoard:
    """Scalars for TensorBoard under `directory` (`tensorboard --logdir`).

    `tf.summary.scalar` needs the `tensorboard` package; without it a
    warning is printed once and no event files are written.
    """

    def __init__(self, directory):
        self.writer = None
        if importlib.util.find_spec("tensorboard") is None:
            warnings.warn("the tensorboard package is not installed: no TensorBoard scalars "
                          "(pip install tensorboard)", stacklevel=2)
            return
        self.writer = tf.summary.create_file_writer(os.fspath(directory))

    def scalars(self, step, values):
        if self.writer is None:
            return
        with self.writer.as_default(step=int(step)):
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, float(value))

    def close(self):
        if self.writer is None:
            return
        self.writer.flush()
        self.writer.close()


def plot_curves(csv_path, png_path, title=None):
    """Training curves (loss, top-1 train/val, lr per epoch) from `log.csv`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = CSVLog.read(csv_path)
    if not rows:
        return None

    def column(name):
        return np.array([float(row[name]) if row[name] not in ("", None) else np.nan for row in rows])

    epochs = column("epoch")
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(epochs, column("loss"), marker="o", label="train")
    axes[0].set_ylabel("loss")
    axes[1].plot(epochs, column("top1"), marker="o", label="train (running)")
    val = column("val_top1")
    if np.any(np.isfinite(val)):
        axes[1].plot(epochs[np.isfinite(val)], val[np.isfinite(val)], marker="s", label="val")
    axes[1].set_ylabel("top-1 accuracy")
    axes[1].set_ylim(0, 1.02)
    axes[2].plot(epochs, column("lr"), marker="o")
    axes[2].set_ylabel("learning rate (end of epoch)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path
