"""Streams videos frame by frame through an online TSM exported to LiteRT.

Usage:

    python -m tsm_keras.stream MODEL_online.tflite VIDEO [VIDEO ...] \\
        [--history 12] [--frame-step 1] [--threads 2] [--every 1] [--quiet]

Every frame is decoded with PyAV, its short side resized (FFmpeg swscale,
bilinear, as the data pipeline's video source does) to the model's
`resize_short` (or its input size), centre-cropped, normalised with the
model's mean / std, quantized if the model takes int8, and run through the
online model with the states of the previous frame (zero at the start of
every video). As in the authors' demo, the prediction of a frame is the
argmax of the sum of the last `--history` logit vectors. `--frame-step N` feeds
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

import argparse
import collections
import dataclasses
import itertools
import os
import sys
import time

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
                f"{model_path}: a {self.metadata.mode} model; streaming needs one exported with --mode online"
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
        image = self.model.quantize("image", frame[None])
        start = time.perf_counter()
        outputs = self.model.run({"image": image, **self.states})
        latency = (time.perf_counter() - start) * 1000.0
        # States go back in as they came out (int8 models share one quantization).
        self.states = {name: outputs[name] for name in self.metadata.state_names}
        logits = self.model.dequantize("logits", outputs["logits"])[0]
        self.recent.append(logits)
        summed = np.sum(self.recent, axis=0)
        label = int(np.argmax(summed))
        result = FrameResult(self.frame_index, label, float(summed[label]), latency, logits)
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


def latency_summary(latencies_ms):
    values = np.asarray(latencies_ms, np.float64)
    return {
        "frames": int(values.size),
        "median_ms": float(np.median(values)),
        "p90_ms": float(np.percentile(values, 90)),
        "mean_ms": float(values.mean()),
    }


def _format_summary(title, summary):
    return (f"{title}: {summary['frames']} frames, latency median {summary['median_ms']:.2f} ms, "
            f"p90 {summary['p90_ms']:.2f} ms, mean {summary['mean_ms']:.2f} ms")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="online .tflite exported by convert/to_tflite.py --mode online")
    parser.add_argument("videos", nargs="+", help="video files (states reset between videos)")
    parser.add_argument("--history", type=int, default=12, help="logit vectors summed per prediction (12)")
    parser.add_argument("--frame-step", type=int, default=1, metavar="N",
                        help="feed every N-th frame, to match the frame spacing of the training clips (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT CPU threads")
    parser.add_argument("--every", type=int, default=1, help="print every N-th frame (default every frame)")
    parser.add_argument("--quiet", action="store_true", help="only the per-video and final summaries")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tsm_keras.data import DataError

    if not os.path.isfile(args.model):
        raise SystemExit(f"{args.model}: no such file")
    if args.every < 1:
        raise SystemExit(f"--every must be >= 1, got {args.every}")
    if args.frame_step < 1:
        raise SystemExit(f"--frame-step must be >= 1, got {args.frame_step}")
    try:
        stream = OnlineStream(args.model, history=args.history, num_threads=args.threads)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    all_latencies, failed, predictions = [], [], {}
    for video in args.videos:
        print(f"== {video}")
        latencies, last = [], None
        try:
            for result in stream.run_video(video, frame_step=args.frame_step):
                latencies.append(result.latency_ms)
                last = result
                if not args.quiet and result.index % args.every == 0:
                    print(f"frame {result.index:5d}  {stream.labels[result.label]:<32s} "
                          f"score {result.score:8.3f}  {result.latency_ms:7.2f} ms")
        except DataError as error:
            print(f"skipped: {error}")
            failed.append(video)
            continue
        if last is None:
            print("skipped: no frames")
            failed.append(video)
            continue
        predictions[video] = stream.labels[last.label]
        all_latencies += latencies
        print(f"final prediction: {stream.labels[last.label]}")
        print(_format_summary("latency", latency_summary(latencies)))
    if all_latencies:
        print(_format_summary(f"all {len(predictions)} video(s)", latency_summary(all_latencies)))
    if failed:
        print(f"{len(failed)} video(s) could not be read: {', '.join(failed)}")
    if not predictions:
        raise SystemExit("no video could be streamed")
    return predictions


if __name__ == "__main__":
    main(sys.argv[1:])
