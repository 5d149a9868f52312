"""`tsm-make-videos` (`tsm_keras.cli.synthetic_videos`): the built-in dataset as files on disk."""


import numpy as np
import pytest
import yaml

from tsm_keras.cli import synthetic_videos
from tsm_keras.data import synthetic
from tsm_keras.training.config import load_config

from tests import REPO_ROOT

av = pytest.importorskip("av")


SYNTHETIC = {"num_classes": 2, "train_videos_per_class": 1, "val_videos_per_class": 1,
             "test_videos_per_class": 2, "num_frames": 8, "frame_size": 32}


def test_writes_the_configs_videos_and_prints_how_to_train_on_them(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"base": str(REPO_ROOT / "configs" / "quickstart_online.yaml"),
                                      "model": {"num_classes": 2}, "data": {"synthetic": SYNTHETIC}}))
    out = tmp_path / "videos"
    assert synthetic_videos.main([str(out), "--config", str(config), "--splits", "test"]) == 0
    assert (out / "test_list.txt").read_text().split("\n")[:4] == [
        "test/moving_left_00000.mp4 0", "test/moving_right_00001.mp4 1",
        "test/moving_left_00002.mp4 0", "test/moving_right_00003.mp4 1"]
    assert not (out / "train").exists()
    # The files hold the videos the config's in-memory source renders.
    with av.open(str(out / "test" / "moving_right_00003.mp4")) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    rendered = synthetic.SyntheticVideo(load_config(config).data.synthetic, "test", 3).render_all()
    assert decoded.shape == rendered.shape == (8, 32, 32, 3)
    assert np.abs(decoded.astype(float) - rendered).mean() < 6.0  # lossy, but the same video
    printed = capsys.readouterr().out
    assert f"test: 4 videos, list {out / 'test_list.txt'}" in printed
    assert f"--set data.source=video --set data.data_root={out} --set data.label_map={out / 'label_map.txt'} " \
           f"--set data.test_list={out / 'test_list.txt'}" in printed


def test_bad_arguments_and_configs(tmp_path, capsys):
    assert synthetic_videos.main([str(tmp_path), "--fps", "0"]) == 2
    assert capsys.readouterr().err == "tsm-make-videos: error: --fps must be >= 1, got 0\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  synthetic:\n    num_classes: 3\n")
    assert synthetic_videos.main([str(tmp_path / "out"), "--config", str(bad)]) == 2
    assert "data.synthetic.num_classes" in capsys.readouterr().err
