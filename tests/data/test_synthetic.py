"""The built-in temporal dataset: determinism, time-reversed pairs, mp4 round trip."""

import numpy as np

from tests.data.videos import decode_all
from tsm_keras.data import DataConfig, SyntheticConfig, build_test_dataset, build_train_dataset, synthetic


def test_videos_are_a_pure_function_of_seed_split_and_index():
    config = SyntheticConfig(frame_size=32, num_frames=12)
    first = synthetic.SyntheticVideo(config, "train", 5).render_all()
    again = synthetic.SyntheticVideo(config, "train", 5).render_all()
    np.testing.assert_array_equal(first, again)
    assert first.shape == (12, 32, 32, 3) and first.dtype == np.uint8
    other_seed = synthetic.SyntheticVideo(SyntheticConfig(frame_size=32, num_frames=12, seed=1), "train", 5)
    other_split = synthetic.SyntheticVideo(config, "val", 5)
    assert not np.array_equal(first, other_seed.render_all())
    assert not np.array_equal(first, other_split.render_all())
    # Rendering a subset gives exactly those frames.
    np.testing.assert_array_equal(synthetic.SyntheticVideo(config, "train", 5).render([7, 2]), first[[7, 2]])


def test_partner_class_is_the_same_video_played_backwards():
    # With the same random draws, the two classes of a pair differ only in
    # time order: their frame sets are identical, so frame averaging cannot
    # tell them apart, while frame order can.
    config = SyntheticConfig(frame_size=32, num_frames=10)
    for index in range(10):
        video = synthetic.SyntheticVideo(config, "train", index)
        partner = synthetic.SyntheticVideo(config, "train", index, label=video.label ^ 1)
        forward, backward = video.render_all(), partner.render_all()
        np.testing.assert_array_equal(forward, backward[::-1])
        assert not np.array_equal(forward, backward)  # there is motion to see


def test_motion_goes_the_way_the_label_says():
    config = SyntheticConfig(frame_size=64, num_frames=16)
    names = synthetic.class_names(10)

    def object_mask(frames):
        # The glyph has a near-black outline; the texture never gets that dark.
        return (frames.max(axis=-1) < 40)

    for index in range(10):
        video = synthetic.SyntheticVideo(config, "train", index)
        frames = video.render([0, 15]).astype(np.float64)
        mask = object_mask(frames)
        ys, xs = np.mgrid[0:64, 0:64]
        centre_x = [(xs * m).sum() / max(m.sum(), 1) for m in mask]
        centre_y = [(ys * m).sum() / max(m.sum(), 1) for m in mask]
        area = [m.sum() for m in mask]
        name = names[video.label]
        if name == "moving_left":
            assert centre_x[1] < centre_x[0] - 15
        if name == "moving_right":
            assert centre_x[1] > centre_x[0] + 15
        if name == "moving_up":
            assert centre_y[1] < centre_y[0] - 15
        if name == "moving_down":
            assert centre_y[1] > centre_y[0] + 15
        if name == "approaching":
            assert area[1] > 3 * area[0]
        if name == "receding":
            assert area[0] > 3 * area[1]
        if name == "appearing":
            assert area[0] == 0 and area[1] > 0
        if name == "disappearing":
            assert area[0] > 0 and area[1] == 0


def test_flip_pairs_and_names():
    assert synthetic.class_names(4) == ["moving_left", "moving_right", "moving_up", "moving_down"]
    assert synthetic.flip_label_map(10) == {0: 1, 1: 0, 6: 7, 7: 6}
    assert synthetic.flip_label_map(6) == {0: 1, 1: 0}


def test_in_memory_pipelines_are_balanced_and_shaped():
    config = DataConfig.from_dict({"source": "synthetic", "resize_short": None, "crop_size": 32, "num_clips": 4,
                                   "synthetic": {"num_classes": 4, "frame_size": 32, "num_frames": 12,
                                                 "train_videos_per_class": 3, "val_videos_per_class": 2}})
    clips, labels = next(iter(build_train_dataset(config, batch_size=12, seed=0)))
    assert clips.shape == (12, 4, 32, 32, 3) and clips.dtype == "float32"
    assert sorted(labels.numpy().tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # one epoch, every video once
    items = list(build_test_dataset(config, "val"))
    assert [int(index) for _, _, index in items] == list(range(8))
    assert [int(label) for _, label, _ in items] == [0, 1, 2, 3] * 2


def test_written_mp4_files_decode_to_the_rendered_frames(tmp_path):
    config = SyntheticConfig(num_classes=2, train_videos_per_class=2, val_videos_per_class=1, num_frames=12,
                             frame_size=32)
    paths = synthetic.write_videos(tmp_path, config, splits=("train", "val"))
    lines = open(paths["train_list"]).read().split("\n")
    assert lines[:4] == ["train/moving_left_00000.mp4 0", "train/moving_right_00001.mp4 1",
                         "train/moving_left_00002.mp4 0", "train/moving_right_00003.mp4 1"]
    assert open(paths["label_map"]).read().split() == ["moving_left", "moving_right"]
    decoded = decode_all(tmp_path / "train" / "moving_right_00001.mp4")
    rendered = synthetic.SyntheticVideo(config, "train", 1).render_all()
    assert decoded.shape == rendered.shape
    assert np.abs(decoded.astype(float) - rendered).mean() < 6.0  # lossy, but the same video

    # The file path end to end: the same split read from the mp4 files.
    files = DataConfig(source="video", train_list=paths["train_list"], val_list=paths["val_list"],
                       data_root=paths["data_root"], label_map=paths["label_map"], resize_short=None,
                       crop_size=32, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    memory = DataConfig(source="synthetic", synthetic=config, resize_short=None, crop_size=32, num_clips=4,
                        mean=(0, 0, 0), std=(1, 1, 1))
    from_files = list(build_test_dataset(files, "val"))
    from_memory = list(build_test_dataset(memory, "val"))
    assert len(from_files) == len(from_memory) == 2
    for (views_file, label_file, _), (views_memory, label_memory, _) in zip(from_files, from_memory):
        assert int(label_file) == int(label_memory)
        assert np.abs(views_file.numpy() - views_memory.numpy()).mean() < 6.0
