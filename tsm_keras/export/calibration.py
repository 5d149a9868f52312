"""Representative data for full-integer (int8) quantization.

Calibration clips come from the project's data pipeline
(`tsm_keras.data.build_test_dataset`: test sampling, centre crop,
normalisation, exactly what the model sees at evaluation):

- a `DataConfig` split (by default the `"val"` split, so that a model is
  never calibrated on the videos it is tested on), which for
  `source="synthetic"` is the built-in temporal dataset;
- an MMAction2 video list file (`path label` lines), or
- a directory of video files (every `.mp4`, `.avi`, `.mkv`, `.webm`,
  `.mov`, `.m4v` in it).

Offline models are calibrated on whole clips (`{"clip": (1, T, H, W, 3)}`).
Online models are calibrated the way they run: the float online model is
run frame by frame over each calibration clip, starting from zero states and
carrying its states, and every `(frame, states)` pair it was fed becomes a
sample (`{"image": ..., "state_*": ...}`), so the state inputs are
calibrated on the values they take in a stream.
"""

import os
import tempfile

import numpy as np

from tsm_keras.models.online import IMAGE_NAME
from tsm_keras.export.runtime import KerasOnlineRunner, stream_frames
from tsm_keras.export.tflite import CLIP_NAME

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


def clip_config(data_config, frame_size, num_segments):
    """`data_config` set to read one centre clip of `num_segments` frames per video.

    Args:
        data_config: `DataConfig` of the model's training, or None for the
            built-in synthetic dataset with the default normalisation.
        frame_size: `(H, W)` of the model input (square crops).
        num_segments: frames per clip.
    """
    from tsm_keras.data import DataConfig

    height, width = frame_size
    if height != width:
        raise ValueError(f"clips are centre-cropped squares; the model input is {height}x{width}")
    if data_config is None:
        data_config = DataConfig(source="synthetic", resize_short=None, crop_size=height)
    changes = {
        "crop_size": height,
        "test_crop_size": None,
        "test_crop": "center",
        "num_clips": num_segments,
        "clip_len": 1,
        "twice_sample": False,
        "dense": False,
        "on_error": "skip",
    }
    if data_config.resize_short is not None and data_config.resize_short < height:
        changes["resize_short"] = height
    return data_config.replace(**changes)


def calibration_config(data_config, frame_size, num_segments, source=None):
    """The `DataConfig` that reads calibration clips for a model.

    Args:
        data_config: `DataConfig` of the model's training (preprocessing,
            label map, synthetic settings), or None for the built-in
            synthetic dataset with the default normalisation.
        frame_size: `(H, W)` of the model input (square crops).
        num_segments: frames per calibration clip.
        source: None (the config's own `"val"` split), a video list file,
            or a directory of videos.

    Returns:
        `(config, split)` for `build_test_dataset`.
    """
    config = clip_config(data_config, frame_size, num_segments)
    if source is None:
        if config.source == "synthetic" or config.val_list is not None:
            return config, "val"
        raise ValueError(
            "no calibration data: pass calib (a video list or a directory of videos), or a data "
            "config with a val_list or source: synthetic"
        )
    source = os.fspath(source)
    if os.path.isdir(source):
        list_path = _list_directory(source)
        root = source
    elif os.path.isfile(source):
        list_path = source
        root = config.data_root_val or config.data_root or os.path.dirname(source)
    else:
        raise FileNotFoundError(f"calib {source}: no such video list or directory")
    return config.replace(source="video", val_list=list_path, data_root_val=root, label_map=None), "val"


def _list_directory(directory):
    names = sorted(
        name for name in os.listdir(directory) if name.lower().endswith(VIDEO_EXTENSIONS)
    )
    if not names:
        raise ValueError(f"calib {directory}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    handle, path = tempfile.mkstemp(prefix="tsm_keras_calib_", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        for name in names:
            out.write(f"{name} 0\n")  # labels are not used for calibration
    return path


def calibration_clips(config, split="val", max_videos=64):
    """Normalised float32 clips `(T, H, W, 3)`, one per video (first view).

    Broken videos are skipped and counted by the data pipeline.
    """
    from tsm_keras.data import build_test_dataset

    dataset = build_test_dataset(config, split)
    if max_videos is not None:
        dataset = dataset.take(int(max_videos))
    count = 0
    for views, _, _ in dataset:
        count += 1
        yield views[0].numpy()
    if count == 0:
        raise ValueError(f"no readable calibration videos in the {split!r} split of {config.list_for(split)}")


def offline_samples(clips):
    """`{"clip": (1, T, H, W, 3)}` per clip."""
    for clip in clips:
        yield {CLIP_NAME: np.asarray(clip, np.float32)[None]}


def online_samples(online_model, clips):
    """`(frame, states)` samples of the float online model streamed over `clips`.

    Each clip `(T, H, W, 3)` is a short video: its frames are fed one by one
    from zero states, the states are carried, and every input dict fed to
    the model is yielded.
    """
    runner = KerasOnlineRunner(online_model)
    for clip in clips:
        for frame, states, _ in stream_frames(runner, np.asarray(clip, np.float32)):
            yield {IMAGE_NAME: frame[None], **states}


def representative_dataset(samples):
    """Makes a replayable `representative_dataset` from finite samples.

    The samples are materialised once, so every pass of the converter sees
    the same data and the counts can be reported.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("the representative dataset is empty")

    def dataset():
        return iter(samples)

    dataset.num_samples = len(samples)
    return dataset
