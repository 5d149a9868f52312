"""Declarative configuration of the video input pipeline.

`DataConfig` holds everything about the data: where the annotation lists and
videos live, how frames are sampled (MMAction2 `SampleFrames` /
`DenseSampleFrames` semantics), how clips are cropped and normalised, what to
do with broken input, and the options of the built-in synthetic dataset.
`DataConfig.from_dict` is the validated entry point for the `data:` section of
a YAML training config: unknown keys, wrong types and impossible values are
refused with a `ValueError` naming the field before any work starts.
"""

import dataclasses
import math
from typing import Optional, Union

SOURCES = ("synthetic", "video", "frames", "tfrecord")
TRAIN_CROPS = ("multiscale", "random_resized", "center")
TEST_CROPS = ("center", "three", "ten")
ON_ERROR = ("skip", "raise")
OUT_OF_BOUND = ("loop", "repeat_last")
SYNTHETIC_MAX_CLASSES = 10


class _Validator:
    """Type and range checks that name the offending field."""

    def __init__(self, prefix):
        self.prefix = prefix

    def fail(self, name, expected, value):
        raise ValueError(f"{self.prefix}.{name}: expected {expected}, got {value!r}")

    def int_(self, name, value, minimum=None, optional=False):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, _int_description(minimum, optional), value)
        if minimum is not None and value < minimum:
            self.fail(name, _int_description(minimum, optional), value)
        return value

    def float_(self, name, value, low=None, high=None, low_open=False, optional=False):
        if value is None and optional:
            return None
        expected = "a number" + _range_description(low, high, low_open)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(name, expected, value)
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(name, expected, value)
        if high is not None and value > high:
            self.fail(name, expected, value)
        return float(value)

    def bool_(self, name, value):
        if not isinstance(value, bool):
            self.fail(name, "true or false", value)
        return value

    def str_(self, name, value, choices=None, optional=False):
        if value is None and optional:
            return None
        if not isinstance(value, str) or (choices is None and not value):
            expected = "a non-empty string" if choices is None else f"one of {list(choices)}"
            self.fail(name, expected + (" or null" if optional else ""), value)
        if choices is not None and value not in choices:
            self.fail(name, f"one of {list(choices)}", value)
        return value

    def floats(self, name, value, length=None, low=None, high=None, low_open=False):
        expected = "a list of numbers" + (f" of length {length}" if length else "")
        expected += _range_description(low, high, low_open)
        if not isinstance(value, (list, tuple)) or not value or (length and len(value) != length):
            self.fail(name, expected, value)
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                self.fail(name, expected, value)
            if low is not None and (item < low or (low_open and item == low)):
                self.fail(name, expected, value)
            if high is not None and item > high:
                self.fail(name, expected, value)
        return tuple(float(item) for item in value)


def _int_description(minimum, optional):
    text = {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    return text + (" or null" if optional else "")


def _range_description(low, high, low_open):
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" <= {high}"
    return f" in {'(' if low_open else '['}{low}, {high}]"


def _check_unknown_keys(cls, values, prefix):
    if not isinstance(values, dict):
        raise ValueError(f"{prefix}: expected a mapping of options, got {values!r}")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{prefix}.{unknown[0]}: unknown option (known options: {', '.join(sorted(known))})")


# ImageNet statistics on 0..255 RGB: the normalisation of every seed recipe.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclasses.dataclass
class SyntheticConfig:
    """Options of the built-in temporal dataset (`tsm_keras.data.synthetic`).

    Classes come in time-reversed pairs (see `synthetic.CLASS_NAMES`), so a
    model that averages frames cannot beat chance within a pair.

    Args:
        num_classes: even number of classes, 2..10 (the first pairs are used).
        train_videos_per_class: videos per class in the `"train"` split.
        val_videos_per_class: videos per class in the `"val"` split.
        test_videos_per_class: videos per class in the `"test"` split.
        num_frames: frames per video.
        frame_size: height and width of the (square) frames, pixels.
        seed: int; every split is a pure function of `(seed, split, index)`,
            and the three splits never share a video.
    """

    num_classes: int = 10
    train_videos_per_class: int = 100
    val_videos_per_class: int = 20
    test_videos_per_class: int = 20
    num_frames: int = 24
    frame_size: int = 64
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self, prefix="data.synthetic"):
        check = _Validator(prefix)
        check.int_("num_classes", self.num_classes, minimum=2)
        if self.num_classes % 2 or self.num_classes > SYNTHETIC_MAX_CLASSES:
            check.fail("num_classes", f"an even int in [2, {SYNTHETIC_MAX_CLASSES}] (classes come in pairs)",
                       self.num_classes)
        check.int_("train_videos_per_class", self.train_videos_per_class, minimum=1)
        check.int_("val_videos_per_class", self.val_videos_per_class, minimum=1)
        check.int_("test_videos_per_class", self.test_videos_per_class, minimum=1)
        check.int_("num_frames", self.num_frames, minimum=2)
        check.int_("frame_size", self.frame_size, minimum=16)
        check.int_("seed", self.seed, minimum=0)

    def videos_per_class(self, split):
        return {"train": self.train_videos_per_class, "val": self.val_videos_per_class,
                "test": self.test_videos_per_class}[split]

    @classmethod
    def from_dict(cls, values, prefix="data.synthetic"):
        _check_unknown_keys(cls, values, prefix)
        config = cls.__new__(cls)
        for field in dataclasses.fields(cls):
            setattr(config, field.name, values.get(field.name, field.default))
        config.validate(prefix)
        return config


FlipLabelMap = Union[None, str, dict]


@dataclasses.dataclass
class DataConfig:
    """Everything about the data of a TSM training or evaluation run.

    Sampling follows MMAction2: `num_clips` segments of `clip_len` frames
    `frame_interval` apart (TSM uses `clip_len=1, frame_interval=1,
    num_clips=T`); training picks a random offset inside each segment,
    testing takes segment centres; `twice_sample` adds the segment starts
    as a second temporal view (SSv2 test); `dense=True` switches to
    `DenseSampleFrames` (`num_clips` frames `dense_sample_range // num_clips`
    apart, `dense_test_clips` windows at test).

    Args:
        source: `"synthetic"` (built-in dataset, no files), `"video"`
            (MMAction2 video list `path label`), `"frames"` (rawframe list
            `frame_dir total_frames label`) or `"tfrecord"` (a directory
            written by `tsm-make-tfrecords`).
        train_list, val_list, test_list: annotation list files (for
            `"tfrecord"`: the TFRecord directories).
        data_root: prefix of the paths in the training list.
        data_root_val: prefix for the val/test lists (default `data_root`).
        label_map: class-name file (one per line) or the name of a shipped
            list, `"kinetics400"` / `"sthv2"` / `"jester"`; labels outside it are skipped.
        filename_tmpl: frame file name template of frame folders.
        start_index: first frame number of frame folders (default 1 for
            `"frames"`, 0 otherwise, like MMAction2).
        clip_len, frame_interval, num_clips: MMAction2 `SampleFrames`.
        out_of_bound: `"loop"` or `"repeat_last"` for indices past the end.
        dense, dense_sample_range, dense_test_clips: `DenseSampleFrames`.
        twice_sample: two temporal views at test (centres and starts).
        resize_short: resize the short side to this many pixels first
            (None keeps the decoded size).
        crop_size: output height and width of training clips (and of test
            views unless `test_crop_size` is set).
        train_crop: `"multiscale"` (MultiScaleCrop, 13 fixed positions),
            `"random_resized"` or `"center"`.
        multiscale_scales, max_wh_scale_gap: MultiScaleCrop options.
        random_resized_area, random_resized_aspect: RandomResizedCrop ranges.
        test_crop: `"center"`, `"three"` (ThreeCrop) or `"ten"` (TenCrop).
        test_crop_size: crop size of test views (default `crop_size`).
        flip: random horizontal flip (p = 0.5) during training.
        flip_label_map: label swap applied with the flip: `"auto"` (the
            SSv2 pairs 86<->87, 93<->94, 166<->167 when the label map is the
            SSv2 class list, the left/right and clockwise pairs of the
            synthetic dataset, no swap otherwise), `None` (no swap), `"sthv2"`,
            `"synthetic"`, or a mapping `{label: flipped_label}`.
        mean, std: per-channel normalisation of 0..255 RGB.
        on_error: `"skip"` broken videos (one warning each, counted in a
            summary at the end of every pass) or `"raise"` on the first.
        num_parallel_calls: parallel decoders (-1 = tf.data AUTOTUNE).
        shuffle_buffer: shuffle buffer for the streamed `"tfrecord"` source
            (the other sources shuffle the whole list exactly).
        decode_threads: FFmpeg threads per decoder: 1 (default) decodes each
            video on one thread and parallelises across videos
            (`num_parallel_calls`); 0 lets FFmpeg pick (frame threads).
        synthetic: `SyntheticConfig` (or its dict) for `source="synthetic"`.

    Example:

    >>> config = DataConfig.from_dict({"source": "synthetic", "crop_size": 64,
    ...                                "resize_short": None})
    >>> config.num_frames_per_clip
    8
    """

    source: str = "synthetic"
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    test_list: Optional[str] = None
    data_root: str = ""
    data_root_val: Optional[str] = None
    label_map: Optional[str] = None
    filename_tmpl: str = "img_{:05d}.jpg"
    start_index: Optional[int] = None
    # Sampling (MMAction2 SampleFrames / DenseSampleFrames).
    clip_len: int = 1
    frame_interval: int = 1
    num_clips: int = 8
    out_of_bound: str = "loop"
    dense: bool = False
    dense_sample_range: int = 64
    dense_test_clips: int = 10
    twice_sample: bool = False
    # Transforms.
    resize_short: Optional[int] = 256
    crop_size: int = 224
    train_crop: str = "multiscale"
    multiscale_scales: tuple = (1.0, 0.875, 0.75, 0.66)
    max_wh_scale_gap: int = 1
    random_resized_area: tuple = (0.08, 1.0)
    random_resized_aspect: tuple = (3 / 4, 4 / 3)
    test_crop: str = "center"
    test_crop_size: Optional[int] = None
    flip: bool = True
    flip_label_map: FlipLabelMap = "auto"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    # Robustness and speed.
    on_error: str = "skip"
    num_parallel_calls: int = -1
    shuffle_buffer: int = 256
    decode_threads: int = 1
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)

    def __post_init__(self):
        if isinstance(self.synthetic, dict):
            self.synthetic = SyntheticConfig.from_dict(self.synthetic)
        self.validate()

    # ------------------------------------------------------------------ API
    @classmethod
    def from_dict(cls, values, prefix="data"):
        """Validated config from a plain dict (e.g. the `data:` YAML section).

        Raises:
            ValueError: naming the field, for unknown keys, wrong types and
                impossible values.
        """
        _check_unknown_keys(cls, values, prefix)
        config = cls.__new__(cls)
        for field in dataclasses.fields(cls):
            if field.name in values:
                value = values[field.name]
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                value = field.default
            setattr(config, field.name, value)
        if isinstance(config.synthetic, dict):
            config.synthetic = SyntheticConfig.from_dict(config.synthetic, prefix=f"{prefix}.synthetic")
        elif not isinstance(config.synthetic, SyntheticConfig):
            raise ValueError(f"{prefix}.synthetic: expected a mapping of options, got {config.synthetic!r}")
        config.validate(prefix)
        return config

    def to_dict(self):
        """Plain-python dict that `from_dict` accepts (YAML friendly)."""
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if isinstance(value, tuple):
                values[name] = list(value)
        return values

    def replace(self, **changes):
        """A validated copy with some fields changed."""
        values = self.to_dict()
        values.update(changes)
        return DataConfig.from_dict(values)

    @property
    def num_frames_per_clip(self):
        """Frames `T` of one training clip / one temporal test view."""
        return self.num_clips * self.clip_len

    @property
    def frame_start_index(self):
        if self.start_index is not None:
            return self.start_index
        return 1 if self.source == "frames" else 0

    @property
    def view_crop_size(self):
        return self.test_crop_size or self.crop_size

    @property
    def num_test_crops(self):
        return {"center": 1, "three": 3, "ten": 10}[self.test_crop]

    @property
    def num_test_clips(self):
        """Temporal views per video at test."""
        if self.dense:
            return self.dense_test_clips
        return 2 if self.twice_sample else 1

    @property
    def num_test_views(self):
        """`V = num_test_clips * num_test_crops` views per test video."""
        return self.num_test_clips * self.num_test_crops

    def list_for(self, split):
        return {"train": self.train_list, "val": self.val_list, "test": self.test_list}[split]

    def root_for(self, split):
        if split == "train" or self.data_root_val is None:
            return self.data_root
        return self.data_root_val

    # ----------------------------------------------------------- validation
    def validate(self, prefix="data"):
        check = _Validator(prefix)
        check.str_("source", self.source, SOURCES)
        for name in ("train_list", "val_list", "test_list", "label_map", "data_root_val"):
            check.str_(name, getattr(self, name), optional=True)
        if not isinstance(self.data_root, str):
            check.fail("data_root", "a string", self.data_root)
        check.str_("filename_tmpl", self.filename_tmpl)
        try:
            self.filename_tmpl.format(1)
        except (IndexError, KeyError, ValueError):
            check.fail("filename_tmpl", "a str.format template with one positional field, like 'img_{:05d}.jpg'",
                       self.filename_tmpl)
        check.int_("start_index", self.start_index, minimum=0, optional=True)
        check.int_("clip_len", self.clip_len, minimum=1)
        check.int_("frame_interval", self.frame_interval, minimum=1)
        check.int_("num_clips", self.num_clips, minimum=1)
        check.str_("out_of_bound", self.out_of_bound, OUT_OF_BOUND)
        check.bool_("dense", self.dense)
        check.int_("dense_sample_range", self.dense_sample_range, minimum=1)
        check.int_("dense_test_clips", self.dense_test_clips, minimum=1)
        check.bool_("twice_sample", self.twice_sample)
        if self.dense and self.dense_sample_range < self.num_clips:
            check.fail("dense_sample_range", f"an int >= num_clips ({self.num_clips})", self.dense_sample_range)
        if self.dense and self.twice_sample:
            check.fail("twice_sample", "false when dense is true (dense has its own test windows)",
                       self.twice_sample)
        check.int_("resize_short", self.resize_short, minimum=1, optional=True)
        check.int_("crop_size", self.crop_size, minimum=1)
        check.str_("train_crop", self.train_crop, TRAIN_CROPS)
        self.multiscale_scales = check.floats("multiscale_scales", self.multiscale_scales, low=0.0, high=1.0,
                                              low_open=True)
        check.int_("max_wh_scale_gap", self.max_wh_scale_gap, minimum=0)
        self.random_resized_area = check.floats("random_resized_area", self.random_resized_area, length=2,
                                                low=0.0, high=1.0, low_open=True)
        self.random_resized_aspect = check.floats("random_resized_aspect", self.random_resized_aspect, length=2,
                                                  low=0.0, low_open=True)
        for name in ("random_resized_area", "random_resized_aspect"):
            low, high = getattr(self, name)
            if low > high:
                check.fail(name, "[low, high] with low <= high", [low, high])
        check.str_("test_crop", self.test_crop, TEST_CROPS)
        check.int_("test_crop_size", self.test_crop_size, minimum=1, optional=True)
        if self.resize_short is not None and self.view_crop_size > self.resize_short:
            check.fail("test_crop_size" if self.test_crop_size else "crop_size",
                       f"at most resize_short ({self.resize_short})", self.view_crop_size)
        if self.test_crop == "three" and self.resize_short is not None and self.resize_short != self.view_crop_size:
            check.fail("test_crop_size" if self.test_crop_size else "crop_size",
                       f"equal to resize_short ({self.resize_short}) for test_crop 'three' (ThreeCrop slides a "
                       f"full-height/width window along the long side)", self.view_crop_size)
        check.bool_("flip", self.flip)
        self.flip_label_map = self._check_flip_label_map(check, self.flip_label_map)
        self.mean = check.floats("mean", self.mean, length=3)
        self.std = check.floats("std", self.std, length=3, low=0.0, low_open=True)
        check.str_("on_error", self.on_error, ON_ERROR)
        check.int_("num_parallel_calls", self.num_parallel_calls, minimum=-1)
        if self.num_parallel_calls == 0:
            check.fail("num_parallel_calls", "a positive int or -1 (AUTOTUNE)", self.num_parallel_calls)
        check.int_("shuffle_buffer", self.shuffle_buffer, minimum=1)
        check.int_("decode_threads", self.decode_threads, minimum=0)
        if self.source == "synthetic":
            self.synthetic.validate(f"{prefix}.synthetic")
        elif self.train_list is None and self.val_list is None and self.test_list is None:
            check.fail("train_list", f"an annotation list for source {self.source!r}", None)

    @staticmethod
    def _check_flip_label_map(check, value):
        if value is None:
            return None
        if isinstance(value, str):
            return check.str_("flip_label_map", value, ("auto", "sthv2", "synthetic"))
        if not isinstance(value, dict):
            check.fail("flip_label_map", "'auto', 'sthv2', 'synthetic', null or a mapping {label: label}", value)
        mapping = {}
        for key, target in value.items():
            try:
                key_int = int(key)  # YAML may give string keys
            except (TypeError, ValueError):
                key_int = None
            if key_int is None or key_int < 0 or isinstance(target, bool) or not isinstance(target, int) \
                    or target < 0:
                check.fail("flip_label_map", "a mapping of non-negative int labels", value)
            mapping[key_int] = target
        for key, target in mapping.items():
            if mapping.get(target, key) != key:
                check.fail("flip_label_map", f"a symmetric mapping ({key}->{target} but {target}->"
                                             f"{mapping[target]})", value)
        return mapping
