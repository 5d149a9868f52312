"""TFRecord shards: the writer CLI, shard balance, and parity with the video source."""

import json

import numpy as np
import pytest

from tests.data.videos import encode_video, frame_numbers, numbered_frames
from tsm_keras.data import DataConfig, build_test_dataset, build_train_dataset, num_train_videos, num_videos
from tsm_keras.cli.make_tfrecords import main as make_tfrecords

NUM_FRAMES = 20


@pytest.fixture(scope="module")
def video_list(tmp_path_factory):
    """5 numbered videos (frame j of video v is gray level of j; v is in the width) + one missing file."""
    root = tmp_path_factory.mktemp("videos")
    lines = []
    for video in range(5):
        encode_video(root / f"v{video}.mp4", numbered_frames(NUM_FRAMES, 32, 32 + 8 * video), gop_size=5)
        lines.append(f"v{video}.mp4 {video % 3}")
    lines.insert(2, "gone.mp4 1")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def shards(video_list, tmp_path_factory):
    out = tmp_path_factory.mktemp("tfrecords") / "train"
    code = make_tfrecords([str(video_list / "list.txt"), str(video_list), str(out), "--shards", "2",
                           "--quality", "95"])
    assert code == 0
    return out


def _config(directory, **changes):
    values = dict(source="tfrecord", train_list=str(directory), val_list=str(directory), resize_short=None,
                  crop_size=32, train_crop="center", flip=False, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    values.update(changes)
    return DataConfig(**values)


def test_writer_deals_videos_round_robin_and_counts_skips(shards, capsys):
    index = json.loads((shards / "index.json").read_text())
    assert index["num_examples"] == 5
    assert [shard["num_examples"] for shard in index["shards"]] == [3, 2]
    assert sorted(path.name for path in shards.glob("*.tfrecord")) == [
        "shard-00000-of-00002.tfrecord", "shard-00001-of-00002.tfrecord"]
    assert index["skipped"] == {"missing": 1}


def test_test_views_match_the_video_source(shards, video_list):
    from_records = {int(index): (views.numpy(), int(label))
                    for views, label, index in build_test_dataset(_config(shards), "val")}
    video_config = DataConfig(source="video", val_list=str(video_list / "list.txt"), data_root=str(video_list),
                              resize_short=None, crop_size=32, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    from_videos = {int(index): (views.numpy(), int(label))
                   for views, label, index in build_test_dataset(video_config, "val")}
    assert sorted(from_records) == sorted(from_videos) == [0, 1, 3, 4, 5]  # list lines; line 2 is missing
    for index, (views, label) in from_records.items():
        assert label == from_videos[index][1]
        assert np.abs(views - from_videos[index][0]).max() <= 3.0  # JPEG q95 of flat frames
        # 20 frames, 4 segments: centres int(5 i + 2.5) = 2, 7, 12, 17.
        assert frame_numbers(views[0], NUM_FRAMES).tolist() == [2, 7, 12, 17]


def test_training_stream_covers_each_epoch_and_is_seeded(shards):
    config = _config(shards, shuffle_buffer=8)
    assert num_train_videos(config) == 5 and num_videos(config, "val") == 5

    def labels(seed):
        dataset = build_train_dataset(config, batch_size=1, seed=seed, epochs=2)
        return [int(label[0]) for _, label in dataset]

    first = labels(0)
    assert len(first) == 10
    assert sorted(first[:5]) == sorted(first[5:]) == [0, 0, 1, 1, 2]
    assert labels(0) == first


def test_record_level_sharding_when_files_do_not_divide(shards):
    config = _config(shards)
    counts = [num_train_videos(config, 3, index) for index in range(3)]
    assert counts == [2, 2, 1]
    seen = []
    for index in range(3):
        dataset = build_test_dataset(config, "val", num_shards=3, shard_index=index)
        seen += [int(video_index) for _, _, video_index in dataset]
    assert sorted(seen) == [0, 1, 3, 4, 5]


def test_cli_refuses_bad_arguments(video_list, tmp_path, capsys):
    code = make_tfrecords([str(video_list / "list.txt"), str(video_list), str(tmp_path / "out"), "--shards", "0"])
    assert code == 2 and "--shards must be >= 1" in capsys.readouterr().err
    code = make_tfrecords([str(tmp_path / "nope.txt"), str(video_list), str(tmp_path / "out")])
    assert code == 1 and "nope.txt: no such file" in capsys.readouterr().err
