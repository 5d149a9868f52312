"""tf.data pipelines over JPEG frame folders: order, seeds, shards, epochs, views."""

import numpy as np
import pytest

from tests.data.videos import frame_numbers, numbered_frames, write_frame_folder
from tsm_keras.data import DataConfig, build_test_dataset, build_train_dataset, num_train_videos, num_videos

NUM_VIDEOS = 8
FRAMES_PER_VIDEO = 16


def _video_level(video):
    return 10 + 30 * video


@pytest.fixture(scope="module")
def frame_dataset(tmp_path_factory):
    """8 folders of 16 JPEG frames; video v is flat gray 10 + 30 v, except
    folder 'numbered' whose frame j is numbered by gray level."""
    root = tmp_path_factory.mktemp("rawframes")
    lines = []
    for video in range(NUM_VIDEOS):
        frames = np.full((FRAMES_PER_VIDEO, 16, 16, 3), _video_level(video), np.uint8)
        write_frame_folder(root / f"video{video}", frames)
        lines.append(f"video{video} {FRAMES_PER_VIDEO} {video % 4}")
    write_frame_folder(root / "numbered", numbered_frames(FRAMES_PER_VIDEO, 16, 16))
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "numbered.txt").write_text(f"numbered {FRAMES_PER_VIDEO} 2\n")
    return root


def _config(root, **changes):
    values = dict(source="frames", train_list=str(root / "train.txt"), val_list=str(root / "numbered.txt"),
                  data_root=str(root), resize_short=None, crop_size=16, train_crop="center", flip=False,
                  num_clips=4, mean=(0, 0, 0), std=(1, 1, 1), num_parallel_calls=2)
    values.update(changes)
    return DataConfig(**values)


def _video_ids(clips):
    levels = clips.reshape(len(clips), -1).mean(axis=1)
    return np.round((levels - 10) / 30).astype(int).tolist()


def _epoch_ids(config, seed, **kwargs):
    dataset = build_train_dataset(config, batch_size=1, seed=seed, epochs=1, **kwargs)
    return [_video_ids(clips.numpy())[0] for clips, _ in dataset]


def test_each_epoch_is_a_seeded_permutation(frame_dataset):
    config = _config(frame_dataset)
    first = _epoch_ids(config, seed=3)
    assert sorted(first) == list(range(NUM_VIDEOS))
    assert _epoch_ids(config, seed=3) == first
    assert _epoch_ids(config, seed=4) != first
    # Infinite by default; the second epoch is another full permutation.
    dataset = build_train_dataset(config, batch_size=NUM_VIDEOS, seed=3)
    epochs = [_video_ids(clips.numpy()) for clips, _ in dataset.take(2)]
    assert epochs[0] == first
    assert sorted(epochs[1]) == list(range(NUM_VIDEOS)) and epochs[1] != epochs[0]


def test_labels_follow_their_clips(frame_dataset):
    clips, labels = next(iter(build_train_dataset(_config(frame_dataset), batch_size=NUM_VIDEOS, seed=0)))
    assert [video % 4 for video in _video_ids(clips.numpy())] == labels.numpy().tolist()
    assert clips.shape == (NUM_VIDEOS, 4, 16, 16, 3) and labels.dtype == "int32"


def test_shards_split_the_list_before_decoding(frame_dataset):
    config = _config(frame_dataset)
    shards = [_epoch_ids(config, seed=1, num_shards=3, shard_index=index) for index in range(3)]
    assert [sorted(ids) for ids in shards] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert [num_train_videos(config, 3, index) for index in range(3)] == [3, 3, 2]
    assert num_train_videos(config) == NUM_VIDEOS
    with pytest.raises(ValueError, match="shard_index must be in"):
        build_train_dataset(config, batch_size=1, num_shards=2, shard_index=2)


def test_test_views_sample_segment_centres_from_img_00001(frame_dataset):
    # 16 frames, 4 segments: centres int(4 i + 2) = 2, 6, 10, 14 (0-based, so img_00003 ...).
    config = _config(frame_dataset, twice_sample=True)
    (views, label, index), = list(build_test_dataset(config, "val"))
    assert views.shape == (2, 4, 16, 16, 3)
    assert int(label) == 2 and int(index) == 0
    assert frame_numbers(views.numpy()[0], FRAMES_PER_VIDEO).tolist() == [2, 6, 10, 14]
    assert frame_numbers(views.numpy()[1], FRAMES_PER_VIDEO).tolist() == [0, 4, 8, 12]  # twice_sample starts
    assert num_videos(config, "val") == 1


def test_train_clips_take_one_frame_per_segment(frame_dataset):
    config = _config(frame_dataset, train_list=str(frame_dataset / "numbered.txt"))
    dataset = build_train_dataset(config, batch_size=1, seed=0)
    seen = set()
    for clips, _ in dataset.take(30):
        numbers = frame_numbers(clips.numpy()[0], FRAMES_PER_VIDEO)
        assert (numbers // 4 == np.arange(4)).all()  # segment i is frames 4i..4i+3
        seen.update(numbers.tolist())
    assert len(seen) > 10  # offsets are random


def test_bad_arguments_are_refused(frame_dataset):
    config = _config(frame_dataset)
    with pytest.raises(ValueError, match="seed must be an int"):
        build_train_dataset(config, batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        build_train_dataset(config, batch_size=0)
    with pytest.raises(ValueError, match="split must be"):
        build_test_dataset(config, split="holdout")
    with pytest.raises(ValueError, match="data.test_list: required"):
        build_test_dataset(config, split="test")
