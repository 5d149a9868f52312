"""Clip transforms against hand-computed MMAction2 boxes and numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.data import DataConfig
from tsm_keras.data import transforms
from tsm_keras.data.pipeline import test_transform as make_test_transform
from tsm_keras.data.pipeline import train_transform as make_train_transform


def _boxes(fn, count=600):
    """Boxes drawn with seeds (7, 0..count-1), in one traced graph."""
    draw = tf.function(lambda seeds: tf.map_fn(fn, seeds, fn_output_signature=tf.int32))
    seeds = tf.stack([tf.fill([count], tf.constant(7, tf.int64)), tf.range(count, dtype=tf.int64)], axis=1)
    return {tuple(box) for box in draw(seeds).numpy().tolist()}


def test_multiscale_crop_candidates_and_13_positions():
    # 256 x 340 frame, input 224: crop sizes int(256 s) = 256, 224, 192, 168;
    # (h, w) pairs with scale-index gap <= 1.
    boxes = _boxes(lambda seed: transforms.multiscale_crop_box(256, 340, 224, seed), 3000)
    sizes = {(h, w) for _, _, h, w in boxes}
    expected_sizes = {(256, 256), (256, 224), (224, 256), (224, 224), (224, 192), (192, 224), (192, 192),
                      (192, 168), (168, 192), (168, 168)}
    assert sizes == expected_sizes
    # For the 224 x 224 crop: w_step = (340 - 224) // 4 = 29, h_step = (256 - 224) // 4 = 8.
    offsets = {(top, left) for top, left, h, w in boxes if (h, w) == (224, 224)}
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    assert offsets == {(8 * y, 29 * x) for x, y in grid}
    assert len(offsets) == 13


def test_multiscale_crop_snaps_sizes_near_the_input_size():
    # 100 x 100, input 89: int(100 * .875) = 87 is within 3 of 89 and snaps to 89.
    boxes = _boxes(lambda seed: transforms.multiscale_crop_box(100, 100, 89, seed), 2000)
    sizes = {size for _, _, h, w in boxes for size in (h, w)}
    assert sizes == {100, 89, 75, 66}
    # With input 90 the gap is 3, not < 3: no snapping.
    boxes = _boxes(lambda seed: transforms.multiscale_crop_box(100, 100, 90, seed), 2000)
    assert {size for _, _, h, w in boxes for size in (h, w)} == {100, 87, 75, 66}


def test_random_resized_crop_boxes_fit_and_follow_the_ranges():
    for top, left, height, width in _boxes(lambda seed: transforms.random_resized_crop_box(
            120, 160, seed, (0.2, 0.6), (0.75, 1.3333)), 300):
        assert 0 <= top and top + height <= 120 and 0 <= left and left + width <= 160
        assert 0.18 <= height * width / (120 * 160) <= 0.62
        assert 0.7 <= width / height <= 1.4
    # No candidate can fit (area 1.0 with a 4:1 aspect of a square frame): centred square fallback.
    box = transforms.random_resized_crop_box(64, 64, tf.constant([1, 2], tf.int64), (1.0, 1.0), (4.0, 4.0))
    assert box.numpy().tolist() == [0, 0, 64, 64]


def test_center_three_and_ten_crop_boxes():
    boxes, mirrored = transforms.test_crop_boxes(256, 340, 224, "center")
    assert boxes.numpy().tolist() == [[16, 58, 224, 224]] and mirrored == (False,)
    # ThreeCrop(256) on 256 x 340: w_step = 42, offsets left, right, middle.
    boxes, mirrored = transforms.test_crop_boxes(256, 340, 256, "three")
    assert boxes.numpy().tolist() == [[0, 0, 256, 256], [0, 84, 256, 256], [0, 42, 256, 256]]
    # Portrait frame: slide along the height.
    boxes, _ = transforms.test_crop_boxes(340, 256, 256, "three")
    assert boxes.numpy()[:, 0].tolist() == [0, 84, 42]
    # TenCrop(224) on 256 x 340: steps 29 (x), 8 (y); each crop followed by its mirror.
    boxes, mirrored = transforms.test_crop_boxes(256, 340, 224, "ten")
    corners = [(0, 0), (0, 116), (32, 0), (32, 116), (16, 58)]
    assert boxes.numpy()[:, :2].tolist() == [list(c) for c in corners for _ in range(2)]
    assert mirrored == (False, True) * 5


def test_three_crop_refuses_a_short_side_other_than_the_crop():
    with pytest.raises(tf.errors.InvalidArgumentError, match="ThreeCrop needs the short side"):
        transforms.test_crop_boxes(250, 340, 256, "three")


def test_resize_short_side_rounds_like_mmcv():
    frames = tf.zeros([1, 272, 640, 3], tf.uint8)
    # 640 * 256 / 272 = 602.35 -> int(602.35 + 0.5) = 602
    assert transforms.resize_short_side(frames, 256).shape == (1, 256, 602, 3)
    frames = tf.zeros([1, 100, 50, 3], tf.uint8)
    assert transforms.resize_short_side(frames, 64).shape == (1, 128, 64, 3)


def test_normalize_matches_numpy():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    expected = (frames.astype(np.float64) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(transforms.normalize(frames, mean, std).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_flip_mirrors_every_frame_and_swaps_labels():
    frames = tf.constant(np.arange(2 * 3 * 4 * 3).reshape(2, 3, 4, 3), tf.float32)
    table = tf.constant(transforms.flip_label_table({86: 87}, 174))
    assert int(table[87]) == 86 and int(table[5]) == 5  # symmetric closure, identity elsewhere
    outcomes = set()
    for seed in range(40):
        out, label = transforms.random_flip(frames, tf.constant(86), tf.constant([3, seed], tf.int64), table)
        flipped = np.array_equal(out.numpy(), frames.numpy()[:, :, ::-1])
        assert flipped or np.array_equal(out.numpy(), frames.numpy())
        assert int(label) == (87 if flipped else 86)
        outcomes.add(flipped)
    assert outcomes == {True, False}
    with pytest.raises(ValueError, match="outside the 10 classes"):
        transforms.flip_label_table({3: 12}, 10)


def test_train_transform_uses_one_crop_for_all_frames():
    # Frames that differ only by a constant: identical geometry means the
    # output frames differ by exactly that constant, whatever the crop/flip.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 200, (72, 96, 3)).astype(np.uint8)
    frames = np.stack([image + 5 * t for t in range(4)]).astype(np.uint8)
    config = DataConfig(resize_short=64, crop_size=56, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    apply = make_train_transform(config)
    for seed in range(6):
        clip, _ = apply(tf.constant(frames), tf.constant(0), tf.constant([seed, seed], tf.int64))
        clip = clip.numpy()
        assert clip.shape == (4, 56, 56, 3)
        for t in range(1, 4):
            np.testing.assert_allclose(clip[t] - clip[0], 5.0 * t, atol=1e-3)


def test_test_transform_views_are_clip_major_and_match_numpy_crops():
    rng = np.random.default_rng(2)
    num_clips, frames_per_clip = 2, 3
    frames = rng.integers(0, 256, (num_clips * frames_per_clip, 64, 80, 3), dtype=np.uint8)
    config = DataConfig(resize_short=None, crop_size=48, num_clips=frames_per_clip, twice_sample=True,
                        test_crop="ten", mean=(0, 0, 0), std=(1, 1, 1))
    views = make_test_transform(config)(tf.constant(frames)).numpy()
    assert views.shape == (20, frames_per_clip, 48, 48, 3)
    w_step, h_step = (80 - 48) // 4, (64 - 48) // 4
    corners = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    clips = frames.reshape(num_clips, frames_per_clip, 64, 80, 3)
    for clip in range(num_clips):
        for crop, (x, y) in enumerate(corners):
            expected = clips[clip, :, y:y + 48, x:x + 48]
            np.testing.assert_array_equal(views[clip * 10 + 2 * crop], expected)
            np.testing.assert_array_equal(views[clip * 10 + 2 * crop + 1], expected[:, :, ::-1])
