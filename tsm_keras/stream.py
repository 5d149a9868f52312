"""Streams videos frame by frame through an online TSM exported to LiteRT.

`OnlineStream` is what `tsm-stream` runs (command line in
`tsm_keras/cli/stream.py`; `python -m tsm_keras.stream` is the same).

Every frame is decoded with PyAV, its short side resized (FFmpeg swscale,
bilinear, as the data pipeline's video source does) to the model's
`resize_short` (or its input size), centre-cropped, normalised with the
model's mean / std, quantized if the model takes int8, and run through the
online model with the states of the previous frame (zero at the start of
every video). As in the authors' demo, the prediction of a frame is the
argmax of the sum of the last `history` logit vectors. Each frame prints
its prediction and the model's latency (interpreter invoke only); a summary
of the latency (median, p90) ends each video and the run. Everything the
runner needs (labels, preprocessing, state names) comes from the model's
`FILE.tflite.json` sidecar.
"""

import collections
import dataclasses
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
    import av

    from tsm_keras.data import DataError
    from tsm_keras.data.sources import frame_to_rgb, resized_shape

    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, FileNotFoundError) as error:
        raise DataError(os.fspath(path), "not_video", str(error)) from None
    with container:
        if not container.streams.video:
            raise DataError(os.fspath(path), "not_video", "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = decode_threads
        try:
            for frame in container.decode(stream):
                height, width = resized_shape(frame.height, frame.width, short_side)
                yield frame_to_rgb(frame, height, width)
        except av.FFmpegError as error:
            raise DataError(os.fspath(path), "truncated", f"decoding stopped: {error}") from None


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

    def run_video(self, path, decode_threads=0):
        """Resets, then yields a `FrameResult` per frame of `path`."""
        self.reset()
        metadata = self.metadata
        short_side = metadata.resize_short or min(metadata.input_size)
        for rgb in decode_frames(path, short_side, decode_threads):
            yield self.step(preprocess(rgb, metadata.input_size, metadata.mean, metadata.std))


if __name__ == "__main__":  # `python -m tsm_keras.stream` is `tsm-stream`
    from tsm_keras.cli.stream import main

    raise SystemExit(main())
