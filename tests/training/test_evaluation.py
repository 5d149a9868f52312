"""Evaluation: metrics against hand-computed values, view averaging, reports and dump files."""

import csv
import json
import pickle

import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.training import evaluation
from tsm_keras.training.evaluation import EvaluationResult


def result(scores, labels, average="prob"):
    scores = np.asarray(scores, np.float32)
    return EvaluationResult(scores, np.asarray(labels), np.arange(len(labels)) + 100, average,
                            [f"c{label}" for label in range(scores.shape[1])])


SCORES = [
    [0.5, 0.3, 0.2, 0.0],  # label 0: top1 hit
    [0.1, 0.2, 0.3, 0.4],  # label 1: rank 3 -> top1 miss, top3 hit
    [0.1, 0.5, 0.4, 0.0],  # label 2: rank 2
    [0.2, 0.3, 0.4, 0.1],  # label 2: top1 hit
    [0.7, 0.1, 0.1, 0.1],  # label 3: rank 4 (tie broken towards lower index)
]
LABELS = [0, 1, 2, 2, 3]


def test_metrics_by_hand():
    metrics = result(SCORES, LABELS).metrics()
    assert metrics["top1"] == pytest.approx(2 / 5)
    assert metrics["top5"] == pytest.approx(1.0)  # min(5, num_classes) = 4: everything
    assert evaluation.top_k_accuracy(np.array(SCORES), np.array(LABELS), 2) == pytest.approx(3 / 5)
    assert evaluation.top_k_accuracy(np.array(SCORES), np.array(LABELS), 3) == pytest.approx(4 / 5)
    # per class recall: c0 1, c1 0, c2 1/2, c3 0 -> mean 0.375
    assert metrics["mean_class_accuracy"] == pytest.approx(0.375)
    assert metrics["num_videos"] == 5


def test_confusion_matrix_and_per_class_table(tmp_path):
    evaluated = result(SCORES, LABELS)
    expected = np.zeros((4, 4), int)
    for label, predicted in zip(LABELS, [0, 3, 1, 2, 0]):
        expected[label, predicted] += 1
    np.testing.assert_array_equal(evaluated.confusion_matrix(), expected)
    with open(evaluation.write_per_class_table(evaluated, tmp_path / "per_class.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["videos"] for row in rows] == ["1", "1", "2", "1"]
    assert [row["correct"] for row in rows] == ["1", "0", "1", "0"]
    assert rows[2]["accuracy"] == "0.5000" and rows[2]["most_confused_with"] == "c1"
    assert rows[3]["most_confused_with"] == "c0" and rows[0]["most_confused_with"] == ""
    png = evaluation.write_confusion_matrix_png(evaluated, tmp_path / "confusion.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_pair_accuracy():
    # Pairs (0,1) and (2,3): only the two scores of the video's pair matter.
    evaluated = result(SCORES, LABELS)
    # video 0 (0 vs 1): 0.5 > 0.3 ok; video 1: 0.2 > 0.1 ok; video 2 (2 vs 3): 0.4 > 0 ok;
    # video 3: 0.4 > 0.1 ok; video 4 (label 3): 0.1 < 0.2 wrong.
    assert evaluation.pair_accuracy(evaluated, [(0, 1), (2, 3)]) == pytest.approx(4 / 5)
    assert evaluation.pair_accuracy(evaluated, [(0, 1)]) == pytest.approx(1.0)


def test_view_averaging_prob_and_logit():
    logits = np.array([[[2.0, 0.0], [0.0, 4.0]]], np.float32)  # 1 video, 2 views, 2 classes
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(evaluation.average_views(tf.constant(logits), "prob"), softmax.mean(1), rtol=1e-6)
    np.testing.assert_allclose(evaluation.average_views(tf.constant(logits), "logit"), [[1.0, 2.0]])
    # The two protocols can disagree: probabilities favour the confident view less than logits do.
    logits = np.array([[[3.0, 0.0], [3.0, 0.0], [0.0, 7.0]]], np.float32)
    prob = evaluation.average_views(tf.constant(logits), "prob").numpy()
    logit = evaluation.average_views(tf.constant(logits), "logit").numpy()
    assert prob.argmax() == 0 and logit.argmax() == 1


def test_evaluate_batches_videos_and_views():
    class MeanModel:
        """Logits (m, 2m, -m) with m the mean of the clip: a known function of each view."""

        output_shape = (None, 3)

        def __call__(self, clips, training=False):
            mean = tf.reduce_mean(clips, axis=[1, 2, 3, 4])
            return tf.stack([mean, 2 * mean, -mean], axis=1)

    views = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)[:, :, None, None, None, None] * np.ones(
        (1, 1, 2, 2, 2, 3), np.float32)
    labels = np.array([0, 1, 2, 1, 0], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((views, labels, np.arange(5, dtype=np.int32) + 7))
    evaluated = evaluation.evaluate(MeanModel(), dataset, average="logit", videos_per_batch=2)
    expected = views.mean(axis=(2, 3, 4, 5))  # per video, per view
    expected = np.stack([expected, 2 * expected, -expected], axis=-1).mean(axis=1)
    np.testing.assert_allclose(evaluated.scores, expected, rtol=1e-6)
    np.testing.assert_array_equal(evaluated.labels, labels)
    np.testing.assert_array_equal(evaluated.video_indices, np.arange(5) + 7)


def test_dump_round_trip(tmp_path):
    evaluated = result(SCORES, LABELS)
    pkl, json_path = evaluation.write_dump(evaluated, tmp_path / "out" / "results.pkl")
    with open(pkl, "rb") as handle:
        records = pickle.load(handle)
    assert [record["gt_label"] for record in records] == LABELS
    assert [record["video_index"] for record in records] == [100, 101, 102, 103, 104]
    assert [record["pred_label"] for record in records] == [0, 3, 1, 2, 0]
    np.testing.assert_array_equal(np.stack([record["pred_score"] for record in records]),
                                  np.asarray(SCORES, np.float32))
    with open(json_path) as handle:
        document = json.load(handle)
    assert document["average"] == "prob" and document["num_classes"] == 4
    assert document["metrics"]["top1"] == pytest.approx(0.4)
    np.testing.assert_allclose([record["pred_score"] for record in document["results"]], SCORES, rtol=1e-6)
