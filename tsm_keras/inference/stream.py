"""Streams videos frame by frame through an online TSM exported to LiteRT.

`OnlineStream` is what `tsm-stream` runs (command line in
`tsm_keras/cli/stream.py`; `python -m tsm_keras.stream` is the same).

Every frame is decoded with PyAV, its short side resized (FFmpeg swscale,
bilinear, as the data pipeline's video source does) to the model's
`resize_short` (or its input size), centre-cropped, normalised with the
model's mean / std, quantized if the model takes int8, and run through the
online model with the states of the previous frame (zero at the start of
every video). As in the authors' demo, the prediction of a frame is the
argmax of the sum of the last `history` logit vectors. `frame_step=N` (`tsm-stream --frame-step N`) feeds
every N-th frame: the shift carries features from the previous *fed* frame, so
the spacing should match the frames of a training clip (the quickstarts sample
8 segments of 24-frame videos: step 3; on the 200 held-out videos the online
quickstart's int8 model ends on the right class for 50.5% of them fed every
frame, for 100% fed every 3rd). Each frame prints
its prediction and the model's latency (interpreter invoke only); a summary
of the latency (median, p90) ends each video and the run. Everything the
runner needs (labels, preprocessing, state names) comes from the model's
`FILE.tflite.json` sidecar.
"""

import collections
import dataclasses
import itertools
import os

import numpy as np


def preprocess(rgb, input_size, mean, std):
    """Centre crop `(H, W, 3)` uint8 to `input_size` and normalise (float32)."""
    crop_height, crop_width = input_size
    height, width = rgb.shape[:2]
    if height < crop_height or width < crop_width:
        raise ValueError(f"frame {height}x{width} is smaller than the crop {crop_height}x{crop_width}")
    top, left = (height - crop_height) // 2, (width - crop_width) // 2  # MMAction2 CenterCrop
    crop = rgb[top:top + crop_height, left:left + crop_width].astype(np.float32)
    return (crop - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def decode_frames(path, short_side, decode_threads=0):
    """RGB uint8 frames of `path` in display order, short side resized to `short_side`."""
    from tsm_keras.data import DataError
    from tsm_keras.data.sources import check_video_file, describe_error, frame_to_rgb, open_container, resized_shape

    check_video_file(os.fspath(path))
    with open_container(os.fspath(path)) as container:
        if not container.streams.video:
            raise DataError(os.fspath(path), "not_video", "no video stream")
        stream = container.streams.video[0]
        count = 0
        try:
            stream.thread_type = "AUTO"  # AttributeError when the stream has no decoder context
            stream.thread_count = decode_threads
            for frame in container.decode(stream):
                height, width = resized_shape(frame.height, frame.width, short_side)
                yield frame_to_rgb(frame, height, width)
                count += 1
        except Exception as error:  # whatever the decoder raises, it is this file's problem
            if count == 0:
                raise DataError(os.fspath(path), "no_frames", describe_error(error)) from None
            raise DataError(os.fspath(path), "truncated", f"decoding stopped: {describe_error(error)}") from None


@dataclasses.dataclass
class FrameResult:
    """One streamed frame: its prediction over the history and the model latency."""

    index: int
    label: int
    score: float
    latency_ms: float
    logits: np.ndarray


class OnlineStream:
    """Runs an online LiteRT TSM over frames, carrying its states.

    Args:
        model_path: the online `.tflite` (with its `.json` sidecar).
        history: logit vectors summed for the prediction (the authors' 12).
        num_threads: LiteRT CPU threads.

    Example:

    >>> stream = OnlineStream("tsm_online_int8.tflite", history=12)
    >>> for result in stream.run_video("clip.mp4"):
    ...     print(result.index, stream.labels[result.label], result.latency_ms)
    """

    def __init__(self, model_path, history=12, num_threads=None):
        from tsm_keras.export.metadata import load_metadata
        from tsm_keras.export.runtime import LiteRTModel

        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.metadata = load_metadata(model_path)
        if self.metadata.mode != "online":
            raise ValueError(
                f"{model_path}: a {self.metadata.mode} model; streaming needs one exported with mode='online'"
            )
        self.model = LiteRTModel(model_path, num_threads=num_threads)
        self.labels = list(self.metadata.labels)
        self.history = history
        self.reset()

    def reset(self):
        """Zero states and an empty history: the start of a new video."""
        self.states = self.model.zero_states(self.metadata.state_names)
        self.recent = collections.deque(maxlen=self.history)
        self.frame_index = 0

    def step(self, frame):
        """Feeds one normalised frame `(H, W, 3)`; returns a `FrameResult`."""
        logits, self.states = self.model.step(frame, self.states)
        self.recent.append(logits)
        summed = np.sum(self.recent, axis=0)
        label = int(np.argmax(summed))
        result = FrameResult(self.frame_index, label, float(summed[label]), self.model.last_invoke_ms, logits)
        self.frame_index += 1
        return result

    def run_video(self, path, decode_threads=0, frame_step=1):
        """Resets, then yields a `FrameResult` per `frame_step`-th frame of `path` (from the first)."""
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        self.reset()
        metadata = self.metadata
        short_side = metadata.resize_short or min(metadata.input_size)
        frames = itertools.islice(decode_frames(path, short_side, decode_threads), 0, None, frame_step)
        for rgb in frames:
            yield self.step(preprocess(rgb, metadata.input_size, metadata.mean, metadata.std))
