"""tf.data pipelines: training clips and test views from a `DataConfig`.

Layout of both pipelines::

    record order (sharded, seeded shuffle)  -- cheap integers, no I/O
      -> load (py_function: sample indices, decode)    parallel, ordered
      -> drop broken videos, count them, summary at end of pass   sequential
      -> crop / flip / normalise (TF graph ops)          parallel, ordered
      -> batch -> prefetch

Sharding happens on the record list, before anything is decoded; every
random choice derives from `(seed, step)` so the output is identical for a
given seed whatever the parallelism.
"""

import numpy as np
import tensorflow as tf

from tsm_keras.data import transforms
from tsm_keras.data.annotations import STHV2_FLIP_PAIRS, load_label_map
from tsm_keras.data.report import DataError, DataReport
from tsm_keras.data.sampling import FrameSampler
from tsm_keras.data.sources import class_names, make_source
from tsm_keras.data import synthetic

_UNBOUNDED_STEPS = 2**62


def _parallelism(config):
    return tf.data.AUTOTUNE if config.num_parallel_calls == -1 else config.num_parallel_calls


def resolve_flip_label_map(config):
    """The `{label: mirrored label}` map a config's flip applies (may be empty).

    `"auto"` picks the SSv2 left/right pairs when the label map is the SSv2
    class list, the synthetic pairs for the synthetic classes, else none.
    """
    value = config.flip_label_map
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    sthv2_map = {a: b for pair in STHV2_FLIP_PAIRS for a, b in (pair, pair[::-1])}
    if value == "sthv2":
        return sthv2_map
    names = class_names(config)
    if value == "synthetic":
        return synthetic.flip_label_map(len(names) if names else config.synthetic.num_classes)
    # "auto"
    if names is None:
        return {}
    if names == load_label_map("sthv2"):
        return sthv2_map
    count = len(names)
    if 2 <= count <= len(synthetic.CLASS_NAMES) and count % 2 == 0 and names == synthetic.class_names(count):
        return synthetic.flip_label_map(count)
    return {}


def _num_classes(config):
    names = class_names(config)
    return len(names) if names is not None else None


def _shard(records, num_shards, shard_index):
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index!r}")
    return records[shard_index::num_shards]


def num_videos(config, split="train", num_shards=1, shard_index=0):
    """Usable videos of a split (after dropping unreadable list lines), per shard.

    Broken media files are only discovered while reading, so a pass may
    yield a few clips less; the training dataset is infinite, so use
    `num_videos(...) // batch_size` as steps per epoch.
    """
    if config.source == "tfrecord":
        from tsm_keras.data import tfrecords

        return tfrecords.num_examples(config.list_for(split), num_shards, shard_index)
    source = make_source(config.replace(on_error="skip"), split, report=DataReport(split, log=False))
    return len(_shard(source.records, num_shards, shard_index))


def num_train_videos(config, num_shards=1, shard_index=0):
    """`num_videos(config, "train", ...)`: the size of one training epoch."""
    return num_videos(config, "train", num_shards, shard_index)


class _Loader:
    """The py_function body: sample indices of one record and decode them."""

    def __init__(self, source, sampler, report, on_error, seed):
        self.source = source
        self.sampler = sampler
        self.report = report
        self.on_error = on_error
        self.seed = seed
        self.empty = np.zeros((0, 1, 1, 3), np.uint8)

    def __call__(self, position, step, pass_index):
        record = self.source.records[int(position)]
        rng = np.random.default_rng([self.seed, int(step)])
        try:
            frames = self.source.read(record, self.sampler, rng)
        except DataError as error:
            self.report.add_skip(int(pass_index), error)
            if self.on_error == "raise":
                raise
            return self.empty, np.int32(record.label), False
        if frames.ndim != 4 or frames.shape[0] != self.sampler.num_indices or frames.shape[-1] != 3:
            raise AssertionError(f"{record.path}: source returned frames of shape {frames.shape}")
        self.report.add_ok(int(pass_index))
        return frames, np.int32(record.label), True


def _record_stream(num_records, seed, shuffle, epochs):
    """(position in list, step, pass index, last of pass) for every item."""
    total = _UNBOUNDED_STEPS if epochs is None else num_records * epochs
    steps = tf.data.Dataset.range(total)
    seed_value = tf.constant(seed, tf.int64)

    def locate(step):
        pass_index = step // num_records
        position = step % num_records
        if shuffle:
            position = tf.random.experimental.index_shuffle(
                position, seed=tf.stack([seed_value, pass_index]), max_index=num_records - 1)
        return position, step, pass_index, tf.equal(step % num_records, num_records - 1)

    return steps.map(locate)


def _load_and_filter(stream, loader, report, parallel, list_path=None):
    """Decoded items with the broken ones dropped; a pass summary at the end
    of every pass. With `list_path` (training, which repeats), a pass that
    read no clip at all is an error: the next one would not read any either,
    and the filter would search for a good clip forever."""

    def load(position, step, pass_index, last):
        frames, label, ok = tf.py_function(loader, [position, step, pass_index], [tf.uint8, tf.int32, tf.bool])
        frames.set_shape([None, None, None, 3])
        label.set_shape([])
        ok.set_shape([])
        return frames, label, ok, step, pass_index, last

    def end_pass(pass_index):
        summary = report.end_pass(int(pass_index))
        if list_path is not None and summary.num_ok == 0:
            raise DataError(list_path, "nothing_read", str(summary))
        return True

    def keep(frames, label, ok, step, pass_index, last):
        done = tf.cond(last, lambda: tf.py_function(end_pass, [pass_index], tf.bool), lambda: tf.constant(True))
        with tf.control_dependencies([done]):
            return tf.identity(ok)

    dataset = stream.map(load, num_parallel_calls=parallel, deterministic=True)
    return dataset.filter(keep)


def _resize_short_if_needed(frames, short_side):
    frames = tf.cast(frames, tf.float32)
    if short_side is None:
        return frames
    shape = tf.shape(frames)
    short = tf.minimum(shape[1], shape[2])
    return tf.cond(tf.equal(short, short_side), lambda: frames,
                   lambda: transforms.resize_short_side(frames, short_side))


def _resize_to(frames, size):
    shape = tf.shape(frames)
    same = tf.logical_and(tf.equal(shape[1], size), tf.equal(shape[2], size))
    return tf.cond(same, lambda: frames, lambda: transforms.resize(frames, size, size))


def train_transform(config, flip_table=None):
    """`(frames uint8 (T,H,W,3), label, seed (2,)) -> (clip float32, label)`."""
    size = config.crop_size

    def apply(frames, label, seed):
        frames = _resize_short_if_needed(frames, config.resize_short)
        shape = tf.shape(frames)
        height, width = shape[1], shape[2]
        if config.train_crop == "multiscale":
            box = transforms.multiscale_crop_box(height, width, size, seed, config.multiscale_scales,
                                                 config.max_wh_scale_gap)
        elif config.train_crop == "random_resized":
            box = transforms.random_resized_crop_box(height, width, seed, config.random_resized_area,
                                                     config.random_resized_aspect)
        else:
            box = transforms.center_crop_box(height, width, size)
        clip = _resize_to(transforms.crop(frames, box[0], box[1], box[2], box[3]), size)
        if config.flip:
            clip, label = transforms.random_flip(clip, label, seed, flip_table)
        clip = transforms.normalize(clip, config.mean, config.std)
        clip.set_shape([config.num_frames_per_clip, size, size, 3])
        return clip, label

    return apply


def test_transform(config):
    """`(frames (Vt*T,H,W,3)) -> views float32 (Vt*Vc, T, S, S, 3)`, clip-major."""
    size = config.view_crop_size
    num_clips = config.num_test_clips
    num_frames = config.num_frames_per_clip

    def apply(frames):
        frames = _resize_short_if_needed(frames, config.resize_short)
        shape = tf.shape(frames)
        boxes, mirrored = transforms.test_crop_boxes(shape[1], shape[2], size, config.test_crop)
        crops = []
        for view, mirror in enumerate(mirrored):
            box = boxes[view]
            crop = _resize_to(transforms.crop(frames, box[0], box[1], box[2], box[3]), size)
            crops.append(tf.reverse(crop, axis=[2]) if mirror else crop)
        views = tf.stack(crops)  # (Vc, Vt*T, S, S, 3)
        views = tf.reshape(views, [len(crops), num_clips, num_frames, size, size, 3])
        views = tf.transpose(views, [1, 0, 2, 3, 4, 5])
        views = tf.reshape(views, [num_clips * len(crops), num_frames, size, size, 3])
        return transforms.normalize(views, config.mean, config.std)

    return apply


def _flip_table(config):
    flip_map = resolve_flip_label_map(config) if config.flip else {}
    if not flip_map:
        return None
    num_classes = _num_classes(config)
    if num_classes is None:
        num_classes = max(max(flip_map), max(flip_map.values())) + 1
    return tf.constant(transforms.flip_label_table(flip_map, num_classes))


def build_train_dataset(config, batch_size, seed=None, num_shards=1, shard_index=0, epochs=None, report=None):
    """Shuffled, augmented training batches.

    The dataset is **infinite** by default (`epochs=None`): every epoch
    visits this shard's videos once in a fresh seeded order; use
    `num_train_videos(config, num_shards, shard_index) // batch_size` as
    steps per epoch. Broken videos are skipped (one warning each, summary at
    the end of every epoch) or fatal with `on_error="raise"`; an epoch in
    which no video could be read stops the dataset with a `DataError`
    ("no video read", carried by a `tf.errors.InvalidArgumentError`).

    Args:
        config: `DataConfig`.
        batch_size: clips per batch (the last partial batch is dropped).
        seed: int; same seed, same batches. None draws one.
        num_shards, shard_index: this worker's share of the list (taken
            before any decoding).
        epochs: None (repeat forever) or a number of passes.
        report: optional `DataReport` to collect skips and summaries.

    Returns:
        `tf.data.Dataset` of `(clips float32 (B, T, H, W, 3), labels int32 (B,))`.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**62)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**62:
        raise ValueError(f"seed must be an int in [0, 2**62) or None, got {seed!r}")
    seed = int(seed)
    report = report if report is not None else DataReport("train")
    parallel = _parallelism(config)
    transform = train_transform(config, _flip_table(config))
    if config.source == "tfrecord":
        from tsm_keras.data import tfrecords

        items = tfrecords.train_items(config, seed, num_shards, shard_index, epochs, report)
    else:
        source = make_source(config, "train", report)
        positions = _shard(list(range(len(source.records))), num_shards, shard_index)
        if not positions:
            raise ValueError(f"data.train_list: no usable videos in {config.train_list} for shard "
                             f"{shard_index}/{num_shards}")
        source.records = [source.records[i] for i in positions]
        loader = _Loader(source, FrameSampler(config, test_mode=False), report, config.on_error, seed)
        items = _load_and_filter(_record_stream(len(positions), seed, True, epochs), loader, report, parallel,
                                 config.train_list)
    seed_tensor = tf.constant(seed, tf.int64)

    def augment(frames, label, ok, step, pass_index, last):
        return transform(frames, label, tf.stack([seed_tensor, step]))

    dataset = items.map(augment, num_parallel_calls=parallel, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def build_test_dataset(config, split="val", num_shards=1, shard_index=0, report=None):
    """Every test view of every video of a split, one video per element.

    Views are `num_test_clips` temporal clips (segment centres; + segment
    starts with `twice_sample`; `dense_test_clips` windows when `dense`)
    times `num_test_crops` crops (`center` 1, `three` 3, `ten` 10),
    clip-major: view `v` is clip `v // num_crops`, crop `v % num_crops`.
    One pass, list order; broken videos are skipped and counted.

    Args:
        config: `DataConfig`.
        split: `"val"` or `"test"` (or `"train"`).
        num_shards, shard_index: this worker's share of the list.
        report: optional `DataReport`.

    Returns:
        `tf.data.Dataset` of `(views float32 (V, T, H, W, 3), label int32,
        video_index int32)`; `video_index` is the 0-based line of the video
        in its list (its index for the synthetic source).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    report = report if report is not None else DataReport(split)
    parallel = _parallelism(config)
    transform = test_transform(config)
    if config.source == "tfrecord":
        from tsm_keras.data import tfrecords

        items = tfrecords.test_items(config, split, num_shards, shard_index, report)
    else:
        source = make_source(config, split, report)
        source.records = _shard(source.records, num_shards, shard_index)
        if not source.records:
            raise ValueError(f"data.{split}_list: no usable videos for shard {shard_index}/{num_shards}")
        index_table = tf.constant([record.index for record in source.records], tf.int32)
        loader = _Loader(source, FrameSampler(config, test_mode=True), report, config.on_error, 0)
        stream = _record_stream(len(source.records), 0, False, 1)
        items = _load_and_filter(stream, loader, report, parallel)
        items = items.map(lambda frames, label, ok, step, pass_index, last:
                          (frames, label, tf.gather(index_table, step)))

    def views(frames, label, video_index):
        return transform(frames), label, video_index

    dataset = items.map(views, num_parallel_calls=parallel, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
