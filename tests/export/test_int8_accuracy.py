"""int8 vs fp32 on held-out clips of the built-in dataset, with a TRAINED uni-directional TSM.

A small TSM-MobileNetV2 (48x48, 4 segments, 6 classes = 3 time-reversed
pairs) is trained from scratch for a few minutes on the built-in temporal
dataset, exported offline and online in fp32 and int8 (int8 I/O, calibrated
on the val split, the online model frame by frame), and all four LiteRT
models classify the 204 videos of the test split. Figures are printed
(`pytest -m slow -s tests/export/test_int8_accuracy.py`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from tsm_keras import build_tsm
from tsm_keras.data import DataConfig, build_test_dataset, build_train_dataset, num_train_videos
from tsm_keras.export.exporter import export_tflite
from tsm_keras.export.runtime import LiteRTModel

pytestmark = pytest.mark.slow

SIZE = 48
SEGMENTS = 4
CLASSES = 6
EPOCHS = 12
BATCH = 16


@pytest.fixture(scope="module")
def data_config():
    return DataConfig.from_dict({
        "source": "synthetic",
        "synthetic": {"num_classes": CLASSES, "frame_size": SIZE, "train_videos_per_class": 80,
                      "val_videos_per_class": 10, "test_videos_per_class": 34},
        "num_clips": SEGMENTS, "resize_short": None, "crop_size": SIZE,
        "train_crop": "multiscale", "flip": True, "test_crop": "center",
    })


@pytest.fixture(scope="module")
def trained(data_config):
    keras.utils.set_random_seed(0)
    model = build_tsm("mobilenet_v2", num_classes=CLASSES, num_segments=SEGMENTS, direction="unidirectional",
                      input_shape=(SIZE, SIZE, 3), dropout=0.2)
    steps = num_train_videos(data_config) // BATCH
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps * EPOCHS, alpha=0.01)
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    model.fit(build_train_dataset(data_config, BATCH, seed=0), steps_per_epoch=steps, epochs=EPOCHS, verbose=0)
    return model


def held_out(data_config):
    clips, labels = [], []
    for views, label, _ in build_test_dataset(data_config, "test"):
        clips.append(views[0].numpy())
        labels.append(int(label))
    return np.stack(clips), np.asarray(labels)


def clip_logits(path, clips):
    """Float logits per clip; an online model streams the frames and averages (consensus)."""
    model = LiteRTModel(path)
    if "state_block2_shift" not in model.input_names:
        return np.stack([model({"clip": clip[None]})["logits"][0] for clip in clips])
    results = []
    for clip in clips:
        states = model.zero_states()
        logits = []
        for frame in clip:
            outputs = model.run({"image": model.quantize("image", frame[None]), **states})
            states = {name: outputs[name] for name in states}
            logits.append(model.dequantize("logits", outputs["logits"])[0])
        results.append(np.mean(logits, axis=0))
    return np.stack(results)


def test_int8_agrees_with_fp32_on_held_out_clips(trained, data_config, tmp_path):
    clips, labels = held_out(data_config)
    assert len(labels) == CLASSES * 34
    keras_predictions = np.concatenate([
        np.asarray(tf.function(lambda x: trained(x, training=False))(clips[i:i + 34])).argmax(-1)
        for i in range(0, len(clips), 34)
    ])
    figures = {"keras_accuracy": float((keras_predictions == labels).mean())}
    for mode in ("offline", "online"):
        logits = {}
        for quant in ("fp32", "int8"):
            path = str(tmp_path / f"tsm_{mode}_{quant}.tflite")
            _, info = export_tflite(trained, path, mode=mode, quant=quant, io="int8" if quant == "int8" else "float",
                                    data_config=data_config, calib_videos=32)
            if quant == "int8":
                assert info.calibration["source"] == "synthetic:val"
            logits[quant] = clip_logits(path, clips)
        predictions = {quant: values.argmax(-1) for quant, values in logits.items()}
        accuracy = {quant: float((predictions[quant] == labels).mean()) for quant in predictions}
        figures[mode] = {
            "fp32_accuracy": accuracy["fp32"],
            "int8_accuracy": accuracy["int8"],
            "top1_agreement": float((predictions["int8"] == predictions["fp32"]).mean()),
            "accuracy_drop_points": 100 * (accuracy["fp32"] - accuracy["int8"]),
            "fp32_equals_keras": float((predictions["fp32"] == keras_predictions).mean()),
            "mean_logit_error_relative": float(np.abs(logits["int8"] - logits["fp32"]).mean()
                                               / np.abs(logits["fp32"]).mean()),
        }
    print(f"\nint8 vs fp32 on {len(labels)} held-out clips (6 classes, chance 16.7%): {figures}")
    # The model really learned the temporal task, so the comparison means something.
    assert figures["keras_accuracy"] >= 0.9
    for mode in ("offline", "online"):
        assert figures[mode]["fp32_equals_keras"] == 1.0
        assert figures[mode]["top1_agreement"] >= 0.98
        assert figures[mode]["accuracy_drop_points"] <= 1.0
