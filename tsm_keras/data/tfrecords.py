"""TFRecord shards: one `tf.train.Example` per video, JPEG frames + label.

Layout of a TFRecord directory (written by `write_tfrecords` or
`tsm-make-tfrecords LIST ROOT OUT --shards N`)::

    OUT/shard-00000-of-00004.tfrecord ... shard-00003-of-00004.tfrecord
    OUT/index.json   # {"num_examples": ..., "shards": [{"file", "num_examples"}], ...}

Example features: `frames` (bytes list, JPEG per frame, display order),
`num_frames`, `label`, `index` (0-based line in the source list) and `name`
(the list entry). Videos are dealt to shards round-robin, so shards differ
by at most one example. Broken videos are skipped (and counted in
`index.json`) by the writer, so a reader never meets one.
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tsm_keras.data.annotations import load_label_map, read_list
from tsm_keras.data.report import DataError, DataReport
from tsm_keras.data.sampling import FrameSampler
from tsm_keras.data.sources import FrameFolderSource, VideoReader

INDEX_FILE = "index.json"
_SHARD_PATTERN = re.compile(r"shard-\d{5}-of-\d{5}\.tfrecord")
_FEATURES = {
    "frames": tf.io.VarLenFeature(tf.string),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "name": tf.io.FixedLenFeature([], tf.string),
}


def shard_name(shard, num_shards):
    return f"shard-{shard:05d}-of-{num_shards:05d}.tfrecord"


def _all_frames(source, record, short_side):
    """All frames of a record as uint8 `(N, H, W, 3)`."""
    if isinstance(source, FrameFolderSource):
        sampler = _AllFrames()
        frames = source.read(record, sampler, None)
        if short_side is not None:
            frames = _resize_numpy(frames, short_side)
        return frames
    reader = VideoReader(record.path)
    return reader.read(np.arange(reader.num_frames), short_side)


class _AllFrames:
    num_indices = None

    def __call__(self, num_frames, rng):
        return np.arange(num_frames)


def _resize_numpy(frames, short_side):
    from tsm_keras.data.transforms import resize_short_side

    return tf.cast(tf.round(resize_short_side(frames, short_side)), tf.uint8).numpy()


def _example(frames, record, name, quality):
    encoded = [tf.io.encode_jpeg(frame, quality=quality).numpy() for frame in frames]
    feature = {
        "frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded)),
        "num_frames": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(encoded)])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[record.label])),
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[record.index])),
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(list_path, data_root, out_dir, num_shards=1, kind="video", label_map=None,
                    resize_short=None, quality=90, filename_tmpl="img_{:05d}.jpg", start_index=1,
                    on_error="skip", report=None):
    """Convert an MMAction2 list (videos or frame folders) to TFRecord shards.

    Args:
        list_path: MMAction2 list (`path label` or `frame_dir total label`).
        data_root: prefix of the list's paths.
        out_dir: output directory (created; existing shards are replaced
            once the conversion succeeded, and left as they were if it fails).
        num_shards: number of shard files.
        kind: `"video"` or `"frames"`.
        label_map: optional label map (name or path) to check labels against.
        resize_short: resize the short side before encoding (None keeps it).
        quality: JPEG quality.
        filename_tmpl, start_index: frame folder naming (kind `"frames"`).
        on_error: `"skip"` (count and go on) or `"raise"`.
        report: optional `DataReport`.

    Returns:
        the index dict also written to `out_dir/index.json`.
    """
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    report = report if report is not None else DataReport("make_tfrecords")
    num_classes = len(load_label_map(label_map)) if label_map else None
    records = read_list(list_path, data_root, kind, num_classes, None if on_error == "raise" else report)
    source = FrameFolderSource(records, filename_tmpl, start_index) if kind == "frames" else None
    os.makedirs(out_dir, exist_ok=True)
    names = [shard_name(shard, num_shards) for shard in range(num_shards)]
    counts = [0] * num_shards
    written = 0
    # Shards are written to a scratch folder and moved in, with index.json
    # last, only once every video is done: a failure leaves the directory as
    # it was (no partial shards, and never shards without their index).
    scratch = tempfile.mkdtemp(prefix=".partial-", dir=out_dir)
    try:
        writers = [tf.io.TFRecordWriter(os.path.join(scratch, name)) for name in names]
        try:
            for record in records:
                try:
                    frames = _all_frames(source, record, resize_short)
                except DataError as error:
                    report.add_skip(0, error)
                    if on_error == "raise":
                        raise
                    continue
                shard = written % num_shards
                relative = os.path.relpath(record.path, data_root) if data_root else record.path
                writers[shard].write(_example(frames, record, relative, quality))
                counts[shard] += 1
                written += 1
                report.add_ok(0)
        finally:
            for writer in writers:
                writer.close()
        summary = report.end_pass(0)
        index = {
            "num_examples": written,
            "shards": [{"file": name, "num_examples": count} for name, count in zip(names, counts)],
            "source_list": os.path.abspath(list_path),
            "kind": kind,
            "resize_short": resize_short,
            "skipped": summary.skipped,
        }
        with open(os.path.join(scratch, INDEX_FILE), "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2)
        _replace_shards(scratch, out_dir, names)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return index


def _replace_shards(scratch, out_dir, names):
    """Move finished shards and their index from `scratch` into `out_dir`,
    removing the shards of an earlier conversion."""
    old_index = os.path.join(out_dir, INDEX_FILE)
    if os.path.exists(old_index):
        os.remove(old_index)
    for name in os.listdir(out_dir):
        if _SHARD_PATTERN.fullmatch(name) and name not in names:
            os.remove(os.path.join(out_dir, name))
    for name in names + [INDEX_FILE]:
        os.replace(os.path.join(scratch, name), os.path.join(out_dir, name))


def read_index(directory):
    path = os.path.join(directory, INDEX_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: not a TFRecord directory (no {INDEX_FILE}; "
                                f"write one with tsm-make-tfrecords)")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _worker_files(directory, num_shards, shard_index):
    """This worker's files and whether examples must be sharded inside them."""
    index = read_index(directory)
    files = [(os.path.join(directory, shard["file"]), shard["num_examples"]) for shard in index["shards"]]
    if len(files) >= num_shards and len(files) % num_shards == 0:
        return files[shard_index::num_shards], False, index["num_examples"]
    return files, True, index["num_examples"]


def num_examples(directory, num_shards=1, shard_index=0):
    """Examples one worker reads from a TFRecord directory."""
    files, shard_records, total = _worker_files(directory, num_shards, shard_index)
    if shard_records:
        return len(range(shard_index, total, num_shards))
    return sum(count for _, count in files)


def _parse(serialized):
    example = tf.io.parse_single_example(serialized, _FEATURES)
    frames = tf.sparse.to_dense(example["frames"], default_value=b"")
    return frames, tf.cast(example["label"], tf.int32), tf.cast(example["index"], tf.int32)


def _decode(frames, indices):
    picked = tf.gather(frames, indices)
    return tf.map_fn(lambda data: tf.io.decode_jpeg(data, channels=3), picked,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _sampled_items(dataset, config, test_mode, seed, num_items, report, parallel):
    """(frames, label, ok, step, pass_index, last) like the file sources."""
    sampler = FrameSampler(config, test_mode)

    def sample(num_frames, step, pass_index):
        report.add_ok(int(pass_index))
        rng = np.random.default_rng([seed, int(step)])
        return sampler(int(num_frames), rng).astype(np.int64)

    def load(step, item):
        frames, label, index = item
        pass_index = step // num_items
        indices = tf.numpy_function(sample, [tf.size(frames, out_type=tf.int64), step, pass_index], tf.int64)
        indices.set_shape([sampler.num_indices])
        last = tf.equal(step % num_items, num_items - 1)
        return _decode(frames, indices), label, tf.constant(True), step, pass_index, last, index

    def end_pass(pass_index):
        report.end_pass(int(pass_index))
        return True

    def keep(frames, label, ok, step, pass_index, last, index):
        done = tf.cond(last, lambda: tf.py_function(end_pass, [pass_index], tf.bool), lambda: tf.constant(True))
        with tf.control_dependencies([done]):
            return tf.identity(ok)

    dataset = dataset.enumerate().map(load, num_parallel_calls=parallel, deterministic=True)
    return dataset.filter(keep)


def _parallelism(config):
    return tf.data.AUTOTUNE if config.num_parallel_calls == -1 else config.num_parallel_calls


def train_items(config, seed, num_shards, shard_index, epochs, report):
    """Streamed training items: shuffled files, interleaved, shuffle buffer.

    Every epoch reads each example once (shuffled within the buffer);
    infinite when `epochs` is None.
    """
    directory = config.train_list
    files, shard_records, total = _worker_files(directory, num_shards, shard_index)
    count = num_examples(directory, num_shards, shard_index)
    if count == 0:
        raise ValueError(f"data.train_list: {directory} has no examples for shard {shard_index}/{num_shards}")
    parallel = _parallelism(config)
    paths = tf.data.Dataset.from_tensor_slices([path for path, _ in files])
    paths = paths.shuffle(len(files), seed=seed % 2**31, reshuffle_each_iteration=True)
    records = paths.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4), block_length=1,
                               num_parallel_calls=parallel, deterministic=True)
    if shard_records:
        records = records.shard(num_shards, shard_index)
    # Shuffle inside each epoch, then repeat: epochs never mix.
    records = records.shuffle(config.shuffle_buffer, seed=seed % 2**31 + 1, reshuffle_each_iteration=True)
    records = records.repeat(epochs)
    items = _sampled_items(records.map(_parse, num_parallel_calls=parallel, deterministic=True), config, False,
                           seed, count, report, parallel)
    return items.map(lambda frames, label, ok, step, pass_index, last, index:
                     (frames, label, ok, step, pass_index, last))


def test_items(config, split, num_shards, shard_index, report):
    """All test items of one worker, in shard order: (frames, label, index)."""
    directory = config.list_for(split)
    if directory is None:
        raise ValueError(f"data.{split}_list: required to read the {split!r} split")
    files, shard_records, total = _worker_files(directory, num_shards, shard_index)
    count = num_examples(directory, num_shards, shard_index)
    if count == 0:
        raise ValueError(f"data.{split}_list: {directory} has no examples for shard {shard_index}/{num_shards}")
    parallel = _parallelism(config)
    records = tf.data.TFRecordDataset([path for path, _ in files])
    if shard_records:
        records = records.shard(num_shards, shard_index)
    items = _sampled_items(records.map(_parse, num_parallel_calls=parallel, deterministic=True), config, True, 0,
                           count, report, parallel)
    return items.map(lambda frames, label, ok, step, pass_index, last, index: (frames, label, index))
