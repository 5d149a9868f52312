"""A built-in temporal action dataset: motion that only time order reveals.

Each video shows an L-shaped coloured object on a textured background seen by
a panning camera. The classes come in time-reversed pairs::

    0 moving_left          1 moving_right
    2 moving_up            3 moving_down
    4 approaching          5 receding
    6 rotating_clockwise   7 rotating_counterclockwise
    8 appearing            9 disappearing

The second video of a pair is drawn from exactly the same distribution as the
first and then played backwards, so the *set* of frames of a video says
nothing about which class of its pair it belongs to: a model that averages
frames (TSN without temporal modelling) is at chance within each pair, while
TSM's temporal shift can tell them apart. A horizontal flip turns
left<->right and clockwise<->counterclockwise (`FLIP_PAIRS`).

Every video is a pure function of `(seed, split, index)`: frames are rendered
on demand (only the frames a sampler asks for), so the in-memory source needs
no storage; `write_videos` writes the same videos as real mp4 files with an
MMAction2 list file and a label map, so the file path can be exercised end to
end.

Example:

>>> from tsm_keras.data import DataConfig, build_train_dataset
>>> config = DataConfig(source="synthetic", resize_short=None, crop_size=64)
>>> clips, labels = next(iter(build_train_dataset(config, batch_size=4, seed=0)))
>>> clips.shape
TensorShape([4, 8, 64, 64, 3])
"""

import os

import numpy as np

from tsm_keras.data.config import SyntheticConfig

CLASS_NAMES = (
    "moving_left",
    "moving_right",
    "moving_up",
    "moving_down",
    "approaching",
    "receding",
    "rotating_clockwise",
    "rotating_counterclockwise",
    "appearing",
    "disappearing",
)
# Label pairs swapped by a horizontal flip.
FLIP_PAIRS = ((0, 1), (6, 7))
# For each pair, the class rendered forward in time (the other is reversed).
_FORWARD_CLASS = {0: 1, 1: 3, 2: 4, 3: 6, 4: 8}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def class_names(num_classes=10):
    """Names of the first `num_classes` (an even number, <= 10) classes."""
    if num_classes % 2 or not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be even and in [2, {len(CLASS_NAMES)}], got {num_classes}")
    return list(CLASS_NAMES[:num_classes])


def flip_label_map(num_classes=10):
    """`{label: mirrored label}` for the flip-sensitive classes present."""
    mapping = {}
    for first, second in FLIP_PAIRS:
        if second < num_classes:
            mapping[first] = second
            mapping[second] = first
    return mapping


def num_videos(config, split):
    """Videos in a split of the synthetic dataset (`SyntheticConfig`)."""
    return config.num_classes * config.videos_per_class(split)


def video_label(config, index):
    """Class of video `index`: classes cycle, so every prefix is balanced."""
    return index % config.num_classes


class SyntheticVideo:
    """One synthetic video: its parameters and a renderer for any frames.

    Args:
        config: `SyntheticConfig`.
        split: `"train"`, `"val"` or `"test"`.
        index: video index within the split.
        label: class to render instead of the video's own (same random
            draws); the partner class of a pair gives the same video played
            backwards. For tests and illustrations.

    Example:

    >>> video = SyntheticVideo(SyntheticConfig(), "train", 3)
    >>> video.label, video.render([0, 5]).shape
    (3, (2, 64, 64, 3))
    """

    def __init__(self, config, split, index, label=None):
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {list(_SPLIT_CODES)}, got {split!r}")
        self.config = config
        self.split = split
        self.index = int(index)
        self.label = video_label(config, self.index) if label is None else int(label)
        if not 0 <= self.label < config.num_classes:
            raise ValueError(f"label must be in [0, {config.num_classes}), got {label!r}")
        self.num_frames = config.num_frames
        rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], self.index])
        size = config.frame_size
        self._texture = _texture(rng, size)
        # Camera: the view window slides linearly over a 2x larger texture.
        self._camera_start = rng.uniform(0, size, 2)
        self._camera_end = np.clip(self._camera_start + rng.uniform(-0.4, 0.4, 2) * size, 0, size)
        hue = rng.uniform(0, 1)
        self._color = _hsv_to_rgb(hue, rng.uniform(0.75, 1.0), 1.0) * 255.0
        self._params = _motion_params(self.label // 2, rng, size)
        self._reversed = self.label != _FORWARD_CLASS[self.label // 2]

    def render(self, frame_indices):
        """uint8 frames `(len(frame_indices), S, S, 3)` at the given indices."""
        frame_indices = np.asarray(frame_indices, dtype=np.float64)
        if np.any(frame_indices < 0) or np.any(frame_indices >= self.num_frames):
            raise IndexError(f"frame indices must be in [0, {self.num_frames}), got {frame_indices.tolist()}")
        tau = frame_indices / (self.num_frames - 1)
        if self._reversed:
            tau = 1.0 - tau
        size = self.config.frame_size
        background = self._background(tau)
        center_x, center_y, scale, angle, alpha = _object_state(self._params, tau)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        dx = xs[None] - center_x[:, None, None]
        dy = ys[None] - center_y[:, None, None]
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        # Object coordinates (u, v) in [-1, 1] inside the glyph's box.
        u = (cos * dx + sin * dy) / scale[:, None, None]
        v = (-sin * dx + cos * dy) / scale[:, None, None]
        body = _glyph(u, v, 1.0)
        outline = _glyph(u, v, 1.25) & ~body
        alpha = alpha[:, None, None, None]
        frames = background
        frames = np.where(outline[..., None], frames * (1 - alpha) + 15.0 * alpha, frames)
        frames = np.where(body[..., None], frames * (1 - alpha) + self._color * alpha, frames)
        return np.clip(frames + 0.5, 0, 255).astype(np.uint8)

    def render_all(self):
        return self.render(np.arange(self.num_frames))

    def _background(self, tau):
        size = self.config.frame_size
        offsets = self._camera_start[None] + (self._camera_end - self._camera_start)[None] * tau[:, None]
        offsets = np.round(offsets).astype(np.int64)
        rows = offsets[:, 1, None] + np.arange(size)[None]
        cols = offsets[:, 0, None] + np.arange(size)[None]
        return self._texture[rows[:, :, None], cols[:, None, :]]


def _texture(rng, size):
    """A 2S x 2S colour texture: smooth colour blobs plus blocky detail."""
    extent = 2 * size
    coarse = rng.uniform(70, 185, (6, 6, 3))
    grid = np.linspace(0, coarse.shape[0] - 1, extent)
    low = np.floor(grid).astype(int).clip(0, coarse.shape[0] - 2)
    frac = (grid - low)[:, None]
    rows = coarse[low] * (1 - frac[..., None]) + coarse[low + 1] * frac[..., None]
    smooth = rows[:, low] * (1 - frac[None, :, :]) + rows[:, low + 1] * frac[None, :, :]
    block = max(2, size // 16)
    detail = rng.uniform(-28, 28, (extent // block + 1, extent // block + 1, 1))
    detail = np.repeat(np.repeat(detail, block, axis=0), block, axis=1)[:extent, :extent]
    return (smooth + detail).astype(np.float32)


def _hsv_to_rgb(hue, saturation, value):
    sector = int(hue * 6) % 6
    fraction = hue * 6 - int(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    return np.array([(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value),
                     (value, p, q)][sector], dtype=np.float32)


def _glyph(u, v, grow):
    """An L: a vertical bar on the left joined to a bar along the bottom."""
    inside = (np.abs(u) <= grow) & (np.abs(v) <= grow)
    stem = u <= -1.0 + 0.6 * grow
    foot = v >= 1.0 - 0.6 * grow
    return inside & (stem | foot)


def _motion_params(pair, rng, size):
    """Forward-time motion of pair `pair` (see `_FORWARD_CLASS`)."""
    params = {
        "pair": pair,
        "x": rng.uniform(0.38, 0.62) * size,
        "y": rng.uniform(0.38, 0.62) * size,
        "scale": rng.uniform(0.11, 0.15) * size,
        "angle": rng.uniform(0, 2 * np.pi),
    }
    if pair in (0, 1):  # moving right / down
        params["start"] = rng.uniform(0.18, 0.3) * size
        params["travel"] = rng.uniform(0.42, 0.52) * size
    elif pair == 2:  # approaching: grow
        params["scale_start"] = rng.uniform(0.05, 0.08) * size
        params["scale_end"] = rng.uniform(0.19, 0.24) * size
    elif pair == 3:  # rotating clockwise (angle grows; y points down)
        params["turn"] = rng.uniform(0.55, 0.9) * np.pi
    elif pair == 4:  # appearing: fade in
        params["fade_start"] = rng.uniform(0.1, 0.3)
        params["fade_end"] = rng.uniform(0.65, 0.9)
    return params


def _object_state(params, tau):
    count = len(tau)
    center_x = np.full(count, params["x"])
    center_y = np.full(count, params["y"])
    scale = np.full(count, params["scale"])
    angle = np.full(count, params["angle"])
    alpha = np.ones(count)
    pair = params["pair"]
    if pair == 0:
        center_x = params["start"] + params["travel"] * tau
    elif pair == 1:
        center_y = params["start"] + params["travel"] * tau
    elif pair == 2:
        scale = params["scale_start"] + (params["scale_end"] - params["scale_start"]) * tau
    elif pair == 3:
        angle = params["angle"] + params["turn"] * tau
    elif pair == 4:
        alpha = np.clip((tau - params["fade_start"]) / (params["fade_end"] - params["fade_start"]), 0, 1)
    return (center_x.astype(np.float32), center_y.astype(np.float32), scale.astype(np.float32),
            angle.astype(np.float32), alpha.astype(np.float32))


def write_videos(out_dir, config=None, splits=("train", "val"), codec="libx264", fps=12, crf=18):
    """Write the dataset as mp4 files + MMAction2 list files + label map.

    Layout: `out_dir/{split}/{class_name}_{index:05d}.mp4`,
    `out_dir/{split}_list.txt` (`split/name.mp4 label` lines, relative to
    `out_dir`) and `out_dir/label_map.txt`.

    Args:
        out_dir: output directory (created).
        config: `SyntheticConfig` (or dict); default `SyntheticConfig()`.
        splits: splits to write.
        codec: PyAV encoder (`"libx264"`, `"mpeg4"`, ...).
        fps: frame rate written in the container.
        crf: x264 quality (lower is better).

    Returns:
        dict with `data_root`, `label_map` and `{split}_list` paths, ready for
        `DataConfig(source="video", **paths)`.
    """
    import av  # Imported here: the in-memory source does not need PyAV.

    from tsm_keras.data.annotations import write_label_map, write_list

    if config is None:
        config = SyntheticConfig()
    elif isinstance(config, dict):
        config = SyntheticConfig.from_dict(config)
    if config.frame_size % 2:
        raise ValueError(f"frame_size must be even to encode yuv420p mp4, got {config.frame_size}")
    names = class_names(config.num_classes)
    paths = {"data_root": os.fspath(out_dir), "label_map": os.path.join(out_dir, "label_map.txt")}
    write_label_map(paths["label_map"], names)
    for split in splits:
        entries = []
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        for index in range(num_videos(config, split)):
            video = SyntheticVideo(config, split, index)
            relative = f"{split}/{names[video.label]}_{index:05d}.mp4"
            _encode(av, os.path.join(out_dir, relative), video.render_all(), codec, fps, crf)
            entries.append((relative, video.label))
        paths[f"{split}_list"] = os.path.join(out_dir, f"{split}_list.txt")
        write_list(paths[f"{split}_list"], entries)
    return paths


def _encode(av, path, frames, codec, fps, crf):
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
