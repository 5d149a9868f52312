"""The test protocol of a config, as run by `tsm-test` and at the end of `fit`."""

import json
import os

import keras
import tensorflow as tf

from tsm_keras.data import build_test_dataset
from tsm_keras.models.precision import precision_scope
from tsm_keras.models.reparameterize import inference_form
from tsm_keras.training import checkpoint as checkpoint_lib
from tsm_keras.training import evaluation
from tsm_keras.training.builders import CHECKPOINT_DIR, FINAL_WEIGHTS, build_model, class_names, time_reversed_pairs

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
PER_CLASS_FILE = "per_class.csv"


def load_test_model(config, checkpoint, precision=None):
    """The config's TSM at the test view size, with weights from `checkpoint`.

    Args:
        config: `Config`.
        checkpoint: a `.weights.h5` file (`final.weights.h5`,
            `best.weights.h5`), a saved model (`model.keras`,
            `best.keras`: its weights, which must fit the config's
            architecture), a training checkpoint directory
            (`checkpoints/step-*`), or a work dir (its `final.weights.h5`,
            else its newest checkpoint).
        precision: the precision the model computes in (`"float32"`,
            `"bfloat16"`, see `tsm_keras.models.precision`); default
            `train.precision`, the precision of the end-of-training test.
            The weights are float32 in every precision, so any checkpoint
            loads in any precision.
    """
    path = os.fspath(checkpoint)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, checkpoint_lib.STATE_FILE)):
        if os.path.isfile(os.path.join(path, FINAL_WEIGHTS)):
            path = os.path.join(path, FINAL_WEIGHTS)
        else:
            latest = checkpoint_lib.latest_checkpoint(os.path.join(path, CHECKPOINT_DIR))
            if latest is None:
                raise FileNotFoundError(f"{checkpoint}: no {FINAL_WEIGHTS} and no checkpoints/step-* inside")
            path = latest
    with precision_scope(precision or config.train.precision):
        model = build_model(config, input_size=config.data.view_crop_size)
    if os.path.isdir(path):
        restore_model_variables(model, path)
    elif path.endswith(".weights.h5") and os.path.isfile(path):
        model.load_weights(path)
    elif path.endswith(".keras") and os.path.isfile(path):
        load_saved_model_weights(model, path)
    else:
        raise FileNotFoundError(
            f"{checkpoint}: expected a .weights.h5 file, a .keras model, a checkpoint directory or a work dir"
        )
    return model


def load_saved_model_weights(model, path):
    """Copies the weights of the `.keras` model at `path` into `model`.

    The weights do not depend on the frame size, so a model saved at the
    training crop evaluates at any test view size; the architecture must be
    the config's.
    """
    saved = keras.saving.load_model(path, compile=False)
    expected = [tuple(weight.shape) for weight in model.weights]
    found = [tuple(weight.shape) for weight in saved.weights]
    if found != expected:
        raise ValueError(
            f"{path}: the saved model's weights ({len(found)} arrays) do not fit the config's model "
            f"({len(expected)} arrays); test it with the config it was trained with"
        )
    model.set_weights(saved.get_weights())
    return model


def restore_model_variables(model, path):
    """Model variables only (no optimizer) from a training checkpoint directory."""
    state = checkpoint_lib.read_state(path)
    saved = state.get("variables", {}).get("model")
    current = [variable.path for variable in model.variables]
    if saved is not None and saved != current:
        raise ValueError(f"{path}: checkpoint was written by a model with other variables than this config's")
    reader = tf.train.Checkpoint(model_variables=[variable.value for variable in model.variables])
    reader.read(os.path.join(path, checkpoint_lib.CHECKPOINT_NAME)).expect_partial()
    return model


def run_test(config, model, out_dir, split=None, dump=None, verbose=1):
    """Evaluates `model` with the config's protocol and writes the reports.

    The model runs in its deploy form (`inference_form`: normalizations
    folded into the convs, the same logits up to float32 rounding). Writes
    `out_dir/metrics.json`, `confusion_matrix.png`, `per_class.csv` and,
    when `dump` is given, `dump`'s `.pkl` and `.json` (format in
    `tsm_keras.training.evaluation`). Prints the metrics when `verbose`.

    Returns:
        The metrics dict (`top1`, `top5`, `mean_class_accuracy`,
        `num_videos`, and `pair_accuracy` for the synthetic dataset).
    """
    split = split or config.test.split
    data = config.data
    views = data.num_test_views
    dataset = build_test_dataset(data, split)
    result = evaluation.evaluate(
        inference_form(model),
        dataset,
        average=config.test.average,
        videos_per_batch=max(1, config.test.views_per_batch // views),
        class_names=class_names(config),
    )
    metrics = result.metrics()
    pairs = time_reversed_pairs(config)
    if pairs:
        metrics["pair_accuracy"] = evaluation.pair_accuracy(result, pairs)
    metrics.update(
        split=split,
        list=data.list_for(split) if data.source != "synthetic" else "built-in synthetic dataset",
        views=f"{data.num_test_clips} clip(s) x {data.num_test_crops} crop(s)",
        average=config.test.average,
    )
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, METRICS_FILE), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=1)
    evaluation.write_confusion_matrix_png(result, os.path.join(out_dir, CONFUSION_FILE))
    evaluation.write_per_class_table(result, os.path.join(out_dir, PER_CLASS_FILE))
    dumped = evaluation.write_dump(result, dump) if dump else ()
    if verbose:
        print(format_metrics(metrics))
        print(f"  reports: {out_dir}/{{{METRICS_FILE}, {CONFUSION_FILE}, {PER_CLASS_FILE}}}")
        for path in dumped:
            print(f"  dump: {path}")
    return metrics


def format_metrics(metrics):
    """One line per metric, the way the README quotes them."""
    lines = [
        f"Test on {metrics['split']}" + (f" = {metrics['list']}" if metrics.get("list") else "")
        + f" ({metrics['num_videos']} videos, {metrics['views']}, "
        f"average {metrics['average']}):",
        f"  top1 {metrics['top1']:.4f}",
        f"  top5 {metrics['top5']:.4f}",
        f"  mean class accuracy {metrics['mean_class_accuracy']:.4f}",
    ]
    if "pair_accuracy" in metrics:
        lines.append(f"  accuracy within time-reversed pairs {metrics['pair_accuracy']:.4f} (chance 0.5)")
    return "\n".join(lines)
