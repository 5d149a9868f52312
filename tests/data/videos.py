"""Helpers for the data tests: tiny media written with PyAV / TensorFlow.

No tests live here; the `test_data_*.py` files import these functions.
"""

import os

import numpy as np

LEVEL_BASE = 8


def _level_step(num_frames):
    step = 232 // max(num_frames - 1, 1)
    if step < 3:
        raise ValueError("too many frames to number by gray level")
    return min(step, 12)


def numbered_frames(num_frames, height=32, width=48):
    """uint8 frames `(N, H, W, 3)`; frame i is flat gray `8 + step i` (survives lossy codecs)."""
    levels = LEVEL_BASE + _level_step(num_frames) * np.arange(num_frames)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).astype(np.uint8).copy()


def frame_numbers(frames, num_frames):
    """Inverse of `numbered_frames(num_frames)` for decoded (possibly lossy) frames."""
    means = np.asarray(frames, np.float64).reshape(len(frames), -1).mean(axis=1)
    return np.round((means - LEVEL_BASE) / _level_step(num_frames)).astype(int)


def encode_video(path, frames, codec="libx264", fps=10, gop_size=None, options=None):
    """Write uint8 RGB frames to a video file with PyAV."""
    import av

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def gray_level(number):
    """Gray level `20 + 12 number` that numbers a flat clip (survives lossy codecs)."""
    return 20 + 12 * number


def gray_number(frames):
    """Inverse of `gray_level` for (possibly resized, lossy) flat frames."""
    return int(np.round((np.asarray(frames, np.float64).mean() - 20) / 12))


def gray_video(path, number, num_frames=12, size=32):
    """A flat gray H.264 clip at `gray_level(number)`."""
    return encode_video(path, np.full((num_frames, size, size, 3), gray_level(number), np.uint8), gop_size=4)


def write_frame_folder(directory, frames, filename_tmpl="img_{:05d}.jpg", start_index=1):
    """JPEG frames `filename_tmpl.format(i + start_index)` in `directory`."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    for position, frame in enumerate(frames):
        data = tf.io.encode_jpeg(frame, quality=95).numpy()
        with open(os.path.join(directory, filename_tmpl.format(position + start_index)), "wb") as handle:
            handle.write(data)
    return str(directory)


def decode_all(path):
    """Every frame of a video, the straightforward way (reference decoder)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
