"""Multi-view evaluation: scores per video, metrics, confusion matrix, dumps.

The test protocol of a config is its data section's views (temporal clips x
spatial crops, `DataConfig.num_test_views`) and `test.average`: MMAction2
averages the softmax probabilities of the views (`"prob"`), mit-han-lab
averages their logits (`"logit"`).

Dump format (`write_dump`), one record per test video in input order:

    {"video_index": int,          # row of the video in the split's list
     "gt_label": int,
     "pred_label": int,           # argmax of pred_score
     "pred_score": float32[C]}    # averaged probabilities ("prob") or
                                  # averaged logits ("logit")

`FILE.pkl` is a pickled list of these records (numpy arrays), like
MMAction2's `tools/test.py --dump`; `FILE.json` holds
`{"average", "num_classes", "class_names", "metrics", "results": [records]}`
with plain lists.
"""

import csv
import dataclasses
import json
import os
import pickle

import numpy as np
import tensorflow as tf

AVERAGES = ("prob", "logit")


@dataclasses.dataclass
class EvaluationResult:
    """Per-video scores of one evaluation and the metrics derived from them.

    Args:
        scores: float32 `(num_videos, num_classes)`, averaged over views.
        labels: int `(num_videos,)` ground truth.
        video_indices: int `(num_videos,)` rows in the split's list.
        average: `"prob"` or `"logit"`.
        class_names: list of `num_classes` names.
    """

    scores: np.ndarray
    labels: np.ndarray
    video_indices: np.ndarray
    average: str
    class_names: list

    @property
    def num_classes(self):
        return self.scores.shape[1]

    @property
    def predictions(self):
        return np.argmax(self.scores, axis=1)

    def metrics(self):
        """`{"top1", "top5", "mean_class_accuracy", "num_videos"}`."""
        return {
            "top1": top_k_accuracy(self.scores, self.labels, 1),
            "top5": top_k_accuracy(self.scores, self.labels, min(5, self.num_classes)),
            "mean_class_accuracy": mean_class_accuracy(self.scores, self.labels),
            "num_videos": int(len(self.labels)),
        }

    def confusion_matrix(self):
        return confusion_matrix(self.predictions, self.labels, self.num_classes)

    def records(self):
        return [
            {
                "video_index": int(index),
                "gt_label": int(label),
                "pred_label": int(np.argmax(score)),
                "pred_score": np.asarray(score, np.float32),
            }
            for index, label, score in zip(self.video_indices, self.labels, self.scores)
        ]


def top_k_accuracy(scores, labels, k):
    """Fraction of rows whose label is among the `k` highest scores.

    Ties are broken towards the lower class index (a stable sort of the
    negated scores), as `np.argsort` in MMAction2's `top_k_accuracy`.
    """
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def confusion_matrix(predictions, labels, num_classes):
    """`matrix[true, predicted]` counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def mean_class_accuracy(scores, labels):
    """Mean over the classes present in `labels` of their top-1 recall."""
    labels = np.asarray(labels)
    predictions = np.argmax(scores, axis=1)
    recalls = [np.mean(predictions[labels == label] == label) for label in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else float("nan")


def average_views(view_logits, average):
    """`(videos, views, classes)` logits -> `(videos, classes)` scores."""
    if average == "prob":
        return tf.reduce_mean(tf.nn.softmax(view_logits, axis=-1), axis=1)
    if average == "logit":
        return tf.reduce_mean(view_logits, axis=1)
    raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")


def evaluate(model, dataset, average="prob", videos_per_batch=1, class_names=None, progress=None):
    """Scores every video of `dataset` with `model`.

    Args:
        model: Keras model `(clips (B, T, H, W, 3)) -> logits (B, C)`.
        dataset: `tf.data.Dataset` of `(views (V, T, H, W, 3), label,
            video_index)` per video (`tsm_keras.data.build_test_dataset`).
        average: `"prob"` or `"logit"` (see the module docstring).
        videos_per_batch: videos whose views run through the model at once.
        class_names: names for reports (default `class_{i}`).
        progress: optional callable `(videos_done)` called after each batch.

    Returns:
        `EvaluationResult`.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")

    @tf.function(reduce_retracing=True)
    def score_batch(views):
        shape = tf.shape(views)
        clips = tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0))
        logits = tf.cast(model(clips, training=False), tf.float32)
        logits = tf.reshape(logits, [shape[0], shape[1], -1])
        return average_views(logits, average)

    scores, labels, indices = [], [], []
    for views, label, index in dataset.batch(int(videos_per_batch)):
        scores.append(score_batch(views).numpy())
        labels.append(label.numpy())
        indices.append(index.numpy())
        if progress is not None:
            progress(sum(len(batch) for batch in labels))
    num_classes = int(model.output_shape[-1])
    if scores:
        scores = np.concatenate(scores).astype(np.float32)
        labels, indices = np.concatenate(labels).astype(np.int64), np.concatenate(indices).astype(np.int64)
    else:
        scores = np.zeros((0, num_classes), np.float32)
        labels = indices = np.zeros((0,), np.int64)
    if class_names is None or len(class_names) != num_classes:
        class_names = [f"class_{label}" for label in range(num_classes)]
    return EvaluationResult(scores, labels, indices, average, list(class_names))


def write_dump(result, path):
    """Writes `stem.pkl` and `stem.json` (see the module docstring); returns both paths."""
    stem = os.path.splitext(os.fspath(path))[0]
    directory = os.path.dirname(stem)
    if directory:
        os.makedirs(directory, exist_ok=True)
    records = result.records()
    with open(stem + ".pkl", "wb") as handle:
        pickle.dump(records, handle)
    document = {
        "average": result.average,
        "num_classes": result.num_classes,
        "class_names": result.class_names,
        "metrics": result.metrics(),
        "results": [dict(record, pred_score=record["pred_score"].tolist()) for record in records],
    }
    with open(stem + ".json", "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return stem + ".pkl", stem + ".json"


def write_per_class_table(result, path):
    """CSV: class, name, videos, correct, accuracy, most confused with."""
    matrix = result.confusion_matrix()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "name", "videos", "correct", "accuracy", "most_confused_with", "confusions"])
        for label, name in enumerate(result.class_names):
            row = matrix[label]
            videos, correct = int(row.sum()), int(row[label])
            others = row.copy()
            others[label] = -1
            confused = int(np.argmax(others)) if videos > correct else None
            writer.writerow([
                label,
                name,
                videos,
                correct,
                f"{correct / videos:.4f}" if videos else "",
                "" if confused is None else result.class_names[confused],
                "" if confused is None else int(row[confused]),
            ])
    return path


def write_confusion_matrix_png(result, path, title=None):
    """Row-normalised confusion matrix as a PNG (counts printed when small)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = result.confusion_matrix()
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, np.maximum(totals, 1))
    num_classes = result.num_classes
    size = min(4 + 0.45 * num_classes, 40)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if num_classes <= 40:
        axes.set_xticks(range(num_classes), result.class_names, rotation=90, fontsize=8)
        axes.set_yticks(range(num_classes), result.class_names, fontsize=8)
    if num_classes <= 20:
        for true in range(num_classes):
            for predicted in range(num_classes):
                if matrix[true, predicted]:
                    color = "white" if normalised[true, predicted] > 0.5 else "black"
                    axes.text(predicted, true, int(matrix[true, predicted]), ha="center", va="center",
                              fontsize=7, color=color)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    metrics = result.metrics()
    axes.set_title(title or f"top-1 {metrics['top1']:.3f}, mean class acc {metrics['mean_class_accuracy']:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def pair_accuracy(result, pairs):
    """Accuracy of telling the two classes of each pair apart.

    For every video whose label is in a pair, the prediction is the higher
    scoring of the pair's two classes; chance is 0.5. Used with the
    time-reversed pairs of the synthetic dataset, where a model without
    temporal modelling cannot do better than chance.
    """
    correct, total = 0, 0
    for first, second in pairs:
        rows = np.isin(result.labels, (first, second))
        if not np.any(rows):
            continue
        choose_second = result.scores[rows, second] > result.scores[rows, first]
        predicted = np.where(choose_second, second, first)
        correct += int(np.sum(predicted == result.labels[rows]))
        total += int(np.sum(rows))
    return correct / total if total else float("nan")
