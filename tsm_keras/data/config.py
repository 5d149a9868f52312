"""Declarative configuration of the video input pipeline.

`DataConfig` holds everything about the data: where the annotation lists and
videos live, how frames are sampled (MMAction2 `SampleFrames` /
`DenseSampleFrames` semantics), how clips are cropped and normalised, what to
do with broken input, and the options of the built-in synthetic dataset.
`DataConfig.from_dict` is the validated entry point for the `data:` section of
a YAML training config: unknown keys, wrong types and impossible values are
refused with a `ConfigError` (a `ValueError`) naming the field before any work starts.
"""

import dataclasses
from typing import Optional, Union

from tsm_keras.utils.config import (
    Check,
    ConfigSection,
    Invalid,
    boolean,
    integer,
    non_negative_int,
    numbers,
    one_of,
    option,
    optional,
    positive_int,
    section,
    text,
)

SOURCES = ("synthetic", "video", "frames", "tfrecord")
TRAIN_CROPS = ("multiscale", "random_resized", "center")
TEST_CROPS = ("center", "three", "ten")
ON_ERROR = ("skip", "raise")
OUT_OF_BOUND = ("loop", "repeat_last")
SYNTHETIC_MAX_CLASSES = 10


FILENAME_TMPL_EXPECTED = "a str.format template with one positional field, like 'img_{:05d}.jpg'"
FLIP_LABEL_MAP_EXPECTED = "'auto', 'sthv2', 'synthetic', null or a mapping {label: label}"


def filename_template(value):
    """Check of `filename_tmpl`: `value.format(1)` must work."""
    if not isinstance(value, str) or not value:
        raise Invalid("a non-empty string")
    try:
        value.format(1)
    except (IndexError, KeyError, ValueError):
        raise Invalid(FILENAME_TMPL_EXPECTED) from None
    return value


def flip_label_map(value):
    """Check of `flip_label_map`: a name, null, or a symmetric `{label: label}` mapping (int keys)."""
    if value is None:
        return None
    if isinstance(value, str):
        return one_of(("auto", "sthv2", "synthetic"))(value)
    if not isinstance(value, dict):
        raise Invalid(FLIP_LABEL_MAP_EXPECTED)
    mapping = {}
    for key, target in value.items():
        try:
            key_int = int(key)  # YAML may give string keys
        except (TypeError, ValueError):
            key_int = None
        if key_int is None or key_int < 0 or isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise Invalid("a mapping of non-negative int labels")
        mapping[key_int] = target
    for key, target in mapping.items():
        if mapping.get(target, key) != key:
            raise Invalid(f"a symmetric mapping ({key}->{target} but {target}->{mapping[target]})")
    return mapping


# ImageNet statistics on 0..255 RGB: the normalisation of every seed recipe.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclasses.dataclass
class SyntheticConfig(ConfigSection):
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

    SECTION = "data.synthetic"
    OPTION_NOUN = "option"

    num_classes: int = option(10, integer(minimum=2))
    train_videos_per_class: int = option(100, positive_int())
    val_videos_per_class: int = option(20, positive_int())
    test_videos_per_class: int = option(20, positive_int())
    num_frames: int = option(24, integer(minimum=2))
    frame_size: int = option(64, integer(minimum=16))
    seed: int = option(0, non_negative_int())

    def validate(self):
        if self.num_classes % 2 or self.num_classes > SYNTHETIC_MAX_CLASSES:
            self.fail("num_classes", f"an even int in [2, {SYNTHETIC_MAX_CLASSES}] (classes come in pairs)",
                      self.num_classes)

    def videos_per_class(self, split):
        return {"train": self.train_videos_per_class, "val": self.val_videos_per_class,
                "test": self.test_videos_per_class}[split]


FlipLabelMap = Union[None, str, dict]


@dataclasses.dataclass
class DataConfig(ConfigSection):
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

    SECTION = "data"
    OPTION_NOUN = "option"

    source: str = option("synthetic", one_of(SOURCES))
    train_list: Optional[str] = option(None, optional(text()))
    val_list: Optional[str] = option(None, optional(text()))
    test_list: Optional[str] = option(None, optional(text()))
    data_root: str = option("", text(allow_empty=True))
    data_root_val: Optional[str] = option(None, optional(text()))
    label_map: Optional[str] = option(None, optional(text()))
    filename_tmpl: str = option("img_{:05d}.jpg", Check(FILENAME_TMPL_EXPECTED, filename_template))
    start_index: Optional[int] = option(None, optional(non_negative_int()))
    # Sampling (MMAction2 SampleFrames / DenseSampleFrames).
    clip_len: int = option(1, positive_int())
    frame_interval: int = option(1, positive_int())
    num_clips: int = option(8, positive_int())
    out_of_bound: str = option("loop", one_of(OUT_OF_BOUND))
    dense: bool = option(False, boolean())
    dense_sample_range: int = option(64, positive_int())
    dense_test_clips: int = option(10, positive_int())
    twice_sample: bool = option(False, boolean())
    # Transforms.
    resize_short: Optional[int] = option(256, optional(positive_int()))
    crop_size: int = option(224, positive_int())
    train_crop: str = option("multiscale", one_of(TRAIN_CROPS))
    multiscale_scales: tuple = option((1.0, 0.875, 0.75, 0.66), numbers(low=0.0, high=1.0, low_open=True))
    max_wh_scale_gap: int = option(1, non_negative_int())
    random_resized_area: tuple = option((0.08, 1.0), numbers(length=2, low=0.0, high=1.0, low_open=True))
    random_resized_aspect: tuple = option((3 / 4, 4 / 3), numbers(length=2, low=0.0, low_open=True))
    test_crop: str = option("center", one_of(TEST_CROPS))
    test_crop_size: Optional[int] = option(None, optional(positive_int()))
    flip: bool = option(True, boolean())
    flip_label_map: FlipLabelMap = option("auto", Check(FLIP_LABEL_MAP_EXPECTED, flip_label_map))
    mean: tuple = option(IMAGENET_MEAN, numbers(length=3))
    std: tuple = option(IMAGENET_STD, numbers(length=3, low=0.0, low_open=True))
    # Robustness and speed.
    on_error: str = option("skip", one_of(ON_ERROR))
    num_parallel_calls: int = option(-1, integer(minimum=-1))
    shuffle_buffer: int = option(256, positive_int())
    decode_threads: int = option(1, non_negative_int())
    synthetic: SyntheticConfig = option(check=section(SyntheticConfig), default_factory=SyntheticConfig)

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
    def validate(self):
        """Rules between fields (each field was checked on its own)."""
        view_size_name = "test_crop_size" if self.test_crop_size else "crop_size"
        if self.dense and self.dense_sample_range < self.num_clips:
            self.fail("dense_sample_range", f"an int >= num_clips ({self.num_clips})", self.dense_sample_range)
        if self.dense and self.twice_sample:
            self.fail("twice_sample", "false when dense is true (dense has its own test windows)", self.twice_sample)
        for name in ("random_resized_area", "random_resized_aspect"):
            low, high = getattr(self, name)
            if low > high:
                self.fail(name, "[low, high] with low <= high", [low, high])
        if self.resize_short is not None and self.view_crop_size > self.resize_short:
            self.fail(view_size_name, f"at most resize_short ({self.resize_short})", self.view_crop_size)
        if self.test_crop == "three" and self.resize_short is not None and self.resize_short != self.view_crop_size:
            self.fail(view_size_name,
                      f"equal to resize_short ({self.resize_short}) for test_crop 'three' (ThreeCrop slides a "
                      f"full-height/width window along the long side)", self.view_crop_size)
        if self.num_parallel_calls == 0:
            self.fail("num_parallel_calls", "a positive int or -1 (AUTOTUNE)", self.num_parallel_calls)
        if self.source != "synthetic" and self.train_list is None and self.val_list is None \
                and self.test_list is None:
            self.fail("train_list", f"an annotation list for source {self.source!r}", None)
