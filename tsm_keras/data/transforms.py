"""Clip transforms in TensorFlow, MMAction2 semantics, one crop per clip.

Every function takes a clip `frames` of shape `(N, H, W, 3)` (uint8 or float,
0..255 RGB) and applies the same geometry to all of its frames. Random
choices come from `tf.random.stateless_*` with an explicit `seed` of shape
`(2,)`, so a pipeline is reproducible for a given seed whatever the
parallelism. All functions work in graph mode (inside `Dataset.map`).
"""

import math

import numpy as np
import tensorflow as tf

# MultiScaleCrop's 13 fixed positions, in units of (w_step, h_step) where
# step = (size - crop) // 4; the first 5 are MMAction2's 5 fixed crops.
FIXED_CROP_POSITIONS = (
    (0, 0), (4, 0), (0, 4), (4, 4), (2, 2),  # corners and centre
    (0, 2), (4, 2), (2, 4), (2, 0),  # centre left / right, lower / upper centre
    (1, 1), (3, 1), (1, 3), (3, 3),  # quarter positions
)


def _seed(seed, salt):
    """A derived stateless seed; `salt` separates independent draws."""
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed[0], seed[1] * 7919 + salt])


def _shape_hw(frames):
    shape = tf.shape(frames)
    return shape[1], shape[2]


def resize_short_side(frames, short_side):
    """Resize so that the short side is `short_side`, keeping the aspect.

    The long side is `int(long * short_side / short + 0.5)`, like mmcv's
    `rescale_size` (used by MMAction2 `Resize(scale=(-1, S))`). Bilinear, no
    antialias, float32 output.
    """
    height, width = _shape_hw(frames)
    height_f = tf.cast(height, tf.float64)
    width_f = tf.cast(width, tf.float64)
    scale = tf.cast(short_side, tf.float64) / tf.minimum(height_f, width_f)
    new_height = tf.cast(tf.floor(height_f * scale + 0.5), tf.int32)
    new_width = tf.cast(tf.floor(width_f * scale + 0.5), tf.int32)
    return resize(frames, new_height, new_width)


def resize(frames, height, width):
    """Bilinear resize of every frame to `(height, width)` (float32 out)."""
    frames = tf.cast(frames, tf.float32)
    return tf.image.resize(frames, tf.stack([height, width]), method="bilinear", antialias=False)


def crop(frames, top, left, height, width):
    """The same window of every frame."""
    return frames[:, top:top + height, left:left + width, :]


def multiscale_crop_box(height, width, crop_size, seed, scales=(1.0, 0.875, 0.75, 0.66),
                        max_wh_scale_gap=1):
    """MMAction2 `MultiScaleCrop` box (`random_crop=False`, 13 fixed crops).

    Candidate crop sizes are `int(min(H, W) * scale)` for each pair of scales
    whose indices differ by at most `max_wh_scale_gap`; a side within 3
    pixels of `crop_size` snaps to it. The offset is one of the 13 fixed
    positions on a 4 x 4 grid of the remaining room.

    Returns:
        int32 tensor `(top, left, crop_height, crop_width)`.
    """
    base_size = tf.cast(tf.minimum(height, width), tf.float64)
    # float64 and a tiny epsilon reproduce Python's int(base * scale).
    crop_sizes = tf.cast(tf.floor(base_size * tf.constant(scales, tf.float64) + 1e-9), tf.int32)
    pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales)) if abs(i - j) <= max_wh_scale_gap]
    choice = tf.random.stateless_uniform([], _seed(seed, 1), 0, len(pairs), dtype=tf.int32)
    pair_table = tf.constant(pairs, tf.int32)  # (height index, width index)
    crop_h = tf.gather(crop_sizes, pair_table[choice, 0])
    crop_w = tf.gather(crop_sizes, pair_table[choice, 1])
    crop_h = tf.where(tf.abs(crop_h - crop_size) < 3, crop_size, crop_h)
    crop_w = tf.where(tf.abs(crop_w - crop_size) < 3, crop_size, crop_w)
    w_step = (width - crop_w) // 4
    h_step = (height - crop_h) // 4
    position = tf.random.stateless_uniform([], _seed(seed, 2), 0, len(FIXED_CROP_POSITIONS), dtype=tf.int32)
    grid = tf.constant(FIXED_CROP_POSITIONS, tf.int32)
    left = grid[position, 0] * w_step
    top = grid[position, 1] * h_step
    return tf.stack([top, left, crop_h, crop_w])


def random_resized_crop_box(height, width, seed, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                            max_attempts=10):
    """MMAction2 `RandomResizedCrop` box.

    Up to `max_attempts` draws of an area fraction (uniform) and a log-uniform
    aspect ratio; the first candidate that fits is placed uniformly at random,
    otherwise the centred square of the short side is used.

    Returns:
        int32 tensor `(top, left, crop_height, crop_width)`.
    """
    area = tf.cast(height * width, tf.float32)
    target_areas = tf.random.stateless_uniform([max_attempts], _seed(seed, 3), area_range[0],
                                               area_range[1]) * area
    log_ratio = tf.random.stateless_uniform([max_attempts], _seed(seed, 4), math.log(aspect_ratio_range[0]),
                                            math.log(aspect_ratio_range[1]))
    ratios = tf.exp(log_ratio)
    crop_ws = tf.cast(tf.round(tf.sqrt(target_areas * ratios)), tf.int32)
    crop_hs = tf.cast(tf.round(tf.sqrt(target_areas / ratios)), tf.int32)
    fits = (crop_ws <= width) & (crop_hs <= height) & (crop_ws > 0) & (crop_hs > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    any_fit = tf.reduce_any(fits)
    short = tf.minimum(height, width)
    crop_w = tf.where(any_fit, crop_ws[first], short)
    crop_h = tf.where(any_fit, crop_hs[first], short)
    jitter = tf.random.stateless_uniform([2], _seed(seed, 5), 0.0, 1.0)
    top_random = tf.cast(tf.floor(jitter[0] * tf.cast(height - crop_h + 1, tf.float32)), tf.int32)
    left_random = tf.cast(tf.floor(jitter[1] * tf.cast(width - crop_w + 1, tf.float32)), tf.int32)
    top = tf.where(any_fit, tf.minimum(top_random, height - crop_h), (height - crop_h) // 2)
    left = tf.where(any_fit, tf.minimum(left_random, width - crop_w), (width - crop_w) // 2)
    return tf.stack([top, left, crop_h, crop_w])


def center_crop_box(height, width, crop_size):
    """MMAction2 `CenterCrop`: `left = (W - crop) // 2`, `top = (H - crop) // 2`.

    A side smaller than `crop_size` is taken whole (the clip is resized to
    the crop size afterwards only by the training path).
    """
    crop_h = tf.minimum(crop_size, height)
    crop_w = tf.minimum(crop_size, width)
    return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])


def random_flip(frames, label, seed, flip_table=None):
    """Flip all frames left-right with probability 0.5, remapping the label.

    Args:
        frames: `(N, H, W, C)`.
        label: int32 scalar.
        seed: `(2,)` stateless seed.
        flip_table: optional int32 vector, `flip_table[label]` is the label
            of the mirrored clip (identity for most classes).
    """
    do_flip = tf.random.stateless_uniform([], _seed(seed, 6)) < 0.5
    frames = tf.cond(do_flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)
    if flip_table is not None:
        label = tf.where(do_flip, tf.gather(flip_table, label), label)
    return frames, label


def normalize(frames, mean, std):
    """`(frames - mean) / std` per channel on 0..255 RGB (float32 out)."""
    frames = tf.cast(frames, tf.float32)
    return (frames - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def test_crop_boxes(height, width, crop_size, mode):
    """Boxes `(V, 4)` of the test crops, plus whether each is mirrored.

    `"center"`: one `CenterCrop`. `"three"`: MMAction2 `ThreeCrop`, three
    crops along the long side (start, end, middle, in that order) --
    the short side must equal `crop_size`, as after `Resize(-1, crop_size)`.
    `"ten"`: MMAction2 `TenCrop`, the 5 crops at (0,0), (4,0), (0,4), (4,4),
    (2,2) steps of `(size - crop) // 4` (x, y), each followed by its mirror.

    Returns:
        `(boxes, mirrored)`: int32 tensor `(V, 4)` of `(top, left, h, w)` and
        a tuple of V Python bools (mirror that view).
    """
    if mode == "center":
        return center_crop_box(height, width, crop_size)[None], (False,)
    if mode == "three":
        check = tf.debugging.assert_equal(
            tf.minimum(height, width), crop_size,
            message="ThreeCrop needs the short side equal to the crop size (set resize_short = test crop size)")
        with tf.control_dependencies([check]):
            crop_h = tf.minimum(crop_size, height)
        crop_w = tf.minimum(crop_size, width)
        w_step = (width - crop_w) // 2
        h_step = (height - crop_h) // 2
        along_width = tf.equal(crop_h, height)  # wide frame: move along the width
        offsets_w = tf.stack([[0, 0], [0, 2 * w_step], [0, w_step]])  # (top, left)
        offsets_h = tf.stack([[0, 0], [2 * h_step, 0], [h_step, 0]])
        offsets = tf.where(along_width, offsets_w, offsets_h)
        sizes = tf.tile(tf.stack([crop_h, crop_w])[None], [3, 1])
        return tf.concat([offsets, sizes], axis=1), (False,) * 3
    if mode == "ten":
        crop_h = tf.minimum(crop_size, height)
        crop_w = tf.minimum(crop_size, width)
        w_step = (width - crop_w) // 4
        h_step = (height - crop_h) // 4
        grid = tf.constant(FIXED_CROP_POSITIONS[:5], tf.int32)
        offsets = tf.stack([grid[:, 1] * h_step, grid[:, 0] * w_step], axis=1)
        sizes = tf.tile(tf.stack([crop_h, crop_w])[None], [5, 1])
        boxes = tf.repeat(tf.concat([offsets, sizes], axis=1), 2, axis=0)
        return boxes, (False, True) * 5
    raise ValueError(f"test crop must be 'center', 'three' or 'ten', got {mode!r}")


def flip_label_table(flip_map, num_classes):
    """int32 vector `table[label] = flipped label` from a `{a: b}` mapping."""
    table = np.arange(num_classes, dtype=np.int32)
    for label, target in (flip_map or {}).items():
        if label >= num_classes or target >= num_classes:
            raise ValueError(f"flip_label_map entry {label}->{target} is outside the {num_classes} classes")
        table[label] = target
        table[target] = label
    return table
