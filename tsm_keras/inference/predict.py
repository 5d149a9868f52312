"""Top-5 classes of a video with a trained TSM (`.keras`) or an exported model (`.tflite`).

`predict(model_path, video, ...)` is what `tsm-predict` runs (command line
in `tsm_keras/cli/predict.py`; `python -m tsm_keras.predict` is the same).

Frames are read and transformed by the project's data pipeline
(`tsm_keras.data`): test sampling of `num_segments` segment centres, short
side resize, crops, normalisation. The protocol is the data config's
(`data_config`: temporal clips x crops, e.g. ThreeCrop) or, without one, a
single centre view. Scores are softmax probabilities averaged over the views
(MMAction2's convention).

For a `.tflite` model the labels, input size, mean / std, short-side resize
and num_segments come from its `FILE.tflite.json` sidecar. An online
`.tflite` is fed the clip's frames one by one with carried states and its
per-frame logits are averaged, which is what the offline model computes.
"""

import numpy as np


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def view_config(data_config, input_size, num_segments, mean=None, std=None, resize_short=None):
    """The `DataConfig` that reads one video's test views for a model.

    Without `data_config`: one centre view, the short side resized to
    `resize_short` (default: the input size), the given mean / std.
    """
    from tsm_keras.data import DataConfig

    height, width = input_size
    if height != width:
        raise ValueError(f"test crops are square; the model input is {height}x{width}")
    if data_config is None:
        # Only the sampling and transform fields are used (the video is read directly).
        values = {"crop_size": height, "test_crop": "center", "num_clips": num_segments,
                  "resize_short": resize_short or height}
        if mean is not None:
            values.update(mean=list(mean), std=list(std))
        return DataConfig.from_dict(values)
    changes = {"crop_size": height, "num_clips": num_segments, "clip_len": 1}
    if data_config.test_crop_size not in (None, height):
        changes["test_crop_size"] = None
    if data_config.resize_short is None:
        changes["resize_short"] = height
    elif data_config.resize_short < height:
        raise ValueError(f"data.resize_short {data_config.resize_short} is smaller than the model input {height}")
    return data_config.replace(**changes)


def read_views(video, config):
    """`(V, T, H, W, 3)` normalised float32 test views of one video file."""
    from tsm_keras.data.pipeline import test_transform
    from tsm_keras.data.sampling import FrameSampler
    from tsm_keras.data.sources import VideoReader

    reader = VideoReader(video, decode_threads=config.decode_threads)
    indices = FrameSampler(config, test_mode=True)(reader.num_frames)
    frames = reader.read(indices, short_side=config.resize_short)
    return np.asarray(test_transform(config)(frames))


class KerasPredictor:
    """Per-view logits of a `.keras` TSM in its deploy form, computed in `precision` (`"float32"` or `"bfloat16"`)."""

    def __init__(self, path, precision="float32"):
        import keras

        import tsm_keras  # noqa: F401  (registers the TSM classes)
        from tsm_keras.models.precision import with_precision
        from tsm_keras.models.reparameterize import inference_form

        model = keras.saving.load_model(path, compile=False)
        if not hasattr(model, "tsm_config"):
            raise ValueError(f"{path}: not a tsm_keras TSM (got {type(model).__name__})")
        self.model = inference_form(with_precision(model, precision))
        self.num_classes = self.model.num_classes
        self.num_segments = self.model.num_segments
        self.input_size = tuple(self.model.frame_shape[:2])
        self.labels = None
        self.mean = self.std = self.resize_short = None

    def __call__(self, views):
        return np.asarray(self.model(views, training=False))


class LiteRTPredictor:
    """Per-view logits of an exported `.tflite` model (offline or online)."""

    def __init__(self, path, num_threads=None):
        from tsm_keras.export.metadata import load_metadata
        from tsm_keras.export.runtime import LiteRTModel

        self.metadata = load_metadata(path)
        self.model = LiteRTModel(path, num_threads=num_threads)
        self.num_classes = self.metadata.num_classes
        self.num_segments = self.metadata.num_segments
        self.input_size = tuple(self.metadata.input_size)
        self.labels = list(self.metadata.labels)
        self.mean, self.std = self.metadata.mean, self.metadata.std
        self.resize_short = self.metadata.resize_short

    def __call__(self, views):
        if self.metadata.mode == "offline":
            return np.concatenate([self.model({"clip": view[None]})["logits"] for view in views])
        from tsm_keras.export.runtime import clip_logits

        return np.stack([clip_logits(self.model, view).mean(axis=0) for view in views])


def load_predictor(path, num_threads=None, precision="float32"):
    """The predictor of a model file; `precision` is for `.keras` models (a `.tflite` has its own)."""
    if path.endswith(".tflite"):
        if precision != "float32":
            raise ValueError(f"{path}: precision {precision!r} is for .keras models; a .tflite model computes in "
                             "the precision it was exported in (tsm-export --quant)")
        return LiteRTPredictor(path, num_threads)
    if path.endswith(".keras"):
        return KerasPredictor(path, precision)
    raise ValueError(f"{path}: expected a .keras or .tflite model")


def predict(model_path, video, data_config=None, labels=None, top=5, num_threads=None, precision="float32"):
    """`[(label, probability), ...]`, the `top` classes of `video` (`precision`: see `KerasPredictor`)."""
    from tsm_keras.export.exporter import resolve_labels

    predictor = load_predictor(model_path, num_threads, precision)
    config = view_config(data_config, predictor.input_size, predictor.num_segments, predictor.mean,
                         predictor.std, predictor.resize_short)
    names = resolve_labels(predictor.num_classes, labels if labels is not None else predictor.labels, data_config)
    views = read_views(video, config)
    probabilities = softmax(predictor(views)).mean(axis=0)
    order = np.argsort(-probabilities)[:top]
    return [(names[index], float(probabilities[index])) for index in order], len(views)
