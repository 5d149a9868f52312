"""Broken input of every kind: skipped with one warning and counted, or fatal on request.

Good videos are flat gray at a level that encodes their list line, so the
tests can check that every good clip comes out, in order, and nothing else.
"""

import logging

import numpy as np
import pytest
import tensorflow as tf

from tests.data.videos import encode_video, gray_level, gray_video, write_frame_folder
from tsm_keras.data import DataConfig, DataError, DataReport, build_test_dataset, build_train_dataset


def _lines_of(views):
    levels = views.reshape(len(views), -1).mean(axis=1)
    return np.round((levels - 20) / 12).astype(int).tolist()


@pytest.fixture(scope="module")
def broken_videos(tmp_path_factory):
    """A video list mixing good files with every kind of broken one."""
    root = tmp_path_factory.mktemp("broken")
    numbered = encode_video(root / "numbered_faststart.mp4", np.full((40, 32, 32, 3), 128, np.uint8), gop_size=8,
                            options={"movflags": "faststart"})
    plain = encode_video(root / "plain.mp4", np.full((40, 32, 32, 3), 128, np.uint8), gop_size=8)
    faststart_bytes = open(numbered, "rb").read()
    plain_bytes = open(plain, "rb").read()
    (root / "truncated.mp4").write_bytes(faststart_bytes[: len(faststart_bytes) * 6 // 10])
    (root / "truncated_no_index.mp4").write_bytes(plain_bytes[: len(plain_bytes) * 6 // 10])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("these are my holiday notes, not a video\n" * 20)
    garbage = bytearray(faststart_bytes)
    start = garbage.find(b"mdat") + 4
    garbage[start:] = np.random.default_rng(0).integers(0, 256, len(garbage) - start, dtype=np.uint8).tobytes()
    (root / "undecodable.mp4").write_bytes(bytes(garbage))
    entries = [
        ("good0.mp4", 0),
        ("missing.mp4", 1),            # missing file
        ("empty.mp4", 2),              # zero bytes
        ("good3.mp4", 3),
        ("truncated.mp4", 0),          # index says 40 frames, data for far fewer
        ("truncated_no_index.mp4", 1), # moov atom cut off: not readable as a video
        ("notes.mp4", 2),              # not a video
        ("undecodable.mp4", 3),        # zero decodable frames
        ("good8.mp4", 9),              # label outside the 4-class label map
        ("good9.mp4", 1),
        "just_a_path_without_label",   # unreadable list lines
        "good0.mp4 one",
        ("good12.mp4", 2),
    ]
    lines = []
    for line, entry in enumerate(entries):
        if isinstance(entry, str):
            lines.append(entry)
            continue
        name, label = entry
        if name.startswith("good"):
            gray_video(root / name, line)
        lines.append(f"{name} {label}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("a\nb\nc\nd\n")
    return root


GOOD_LINES = [0, 3, 9, 12]
EXPECTED_SKIPS = {"missing": 1, "empty": 1, "truncated": 1, "not_video": 2, "no_frames": 1, "bad_label": 1,
                  "bad_line": 2}


def _config(root, **changes):
    values = dict(source="video", train_list=str(root / "list.txt"), val_list=str(root / "list.txt"),
                  data_root=str(root), label_map=str(root / "labels.txt"), resize_short=None, crop_size=32,
                  train_crop="center", flip=False, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    values.update(changes)
    return DataConfig(**values)


def test_skip_mode_keeps_every_good_clip_and_counts_every_skip(broken_videos, caplog):
    report = DataReport("val")
    with caplog.at_level(logging.WARNING, logger="tsm_keras.data"):
        items = list(build_test_dataset(_config(broken_videos), "val", report=report))
    assert [int(index) for _, _, index in items] == GOOD_LINES
    assert [_lines_of(views.numpy())[0] for views, _, _ in items] == GOOD_LINES
    assert [int(label) for _, label, _ in items] == [0, 3, 1, 2]
    summary, = report.summaries
    print(f"\nskip mode summary: {summary}")
    assert summary.num_ok == len(GOOD_LINES)
    assert summary.skipped == EXPECTED_SKIPS
    # One warning per broken item, naming the file and the reason.
    warnings = [record.getMessage() for record in caplog.records if record.getMessage().startswith("skipping")]
    assert len(warnings) == sum(EXPECTED_SKIPS.values())
    assert any("missing.mp4: missing file" in text for text in warnings)
    assert any("empty.mp4: zero bytes" in text for text in warnings)
    assert any("truncated.mp4: truncated" in text for text in warnings)
    assert any("undecodable.mp4: zero decodable frames" in text for text in warnings)
    assert any("notes.mp4: not a video" in text for text in warnings)
    assert any("list.txt:9 (good8.mp4): label outside the label map (label 9 not in [0, 4))" in text
               for text in warnings)
    assert any("list.txt:11: unreadable list line" in text for text in warnings)
    # The closing summary is logged too.
    assert any(str(summary) == record.getMessage() for record in caplog.records)


def test_training_passes_warn_once_but_count_every_epoch(broken_videos, caplog):
    report = DataReport("train")
    with caplog.at_level(logging.WARNING, logger="tsm_keras.data"):
        dataset = build_train_dataset(_config(broken_videos), batch_size=1, seed=0, epochs=2, report=report)
        lines = [_lines_of(clips.numpy()[0])[0] for clips, _ in dataset]
    assert sorted(lines[:4]) == GOOD_LINES and sorted(lines[4:]) == GOOD_LINES
    assert [summary.pass_index for summary in report.summaries] == [0, 1]
    for summary in report.summaries:
        print(f"train {summary}")
        assert summary.num_ok == 4 and summary.skipped == EXPECTED_SKIPS
    warnings = [record for record in caplog.records if record.getMessage().startswith("skipping")]
    assert len(warnings) == sum(EXPECTED_SKIPS.values())


def test_raise_mode_stops_at_the_first_bad_list_line(broken_videos):
    with pytest.raises(DataError, match=r"list.txt:9 \(good8.mp4\): label outside the label map"):
        build_test_dataset(_config(broken_videos, on_error="raise"), "val")


def test_raise_mode_stops_at_the_first_broken_video(broken_videos):
    # Only good lines and decode-time problems: the good clip before the
    # missing file comes out, then the missing file is fatal.
    text = (broken_videos / "list.txt").read_text().split("\n")
    (broken_videos / "decode_only.txt").write_text("\n".join([text[0], text[1], text[3]]) + "\n")
    config = _config(broken_videos, on_error="raise", val_list=str(broken_videos / "decode_only.txt"),
                     num_parallel_calls=1)
    iterator = iter(build_test_dataset(config, "val"))
    views, label, index = next(iterator)
    assert int(index) == 0
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"missing.mp4: missing file"):
        next(iterator)


def test_frame_folders_with_gaps_and_missing_folders(tmp_path):
    for name, line in (("good", 0), ("gappy", 1)):
        write_frame_folder(tmp_path / name, np.full((8, 16, 16, 3), gray_level(line), np.uint8))
    (tmp_path / "gappy" / "img_00005.jpg").unlink()
    (tmp_path / "list.txt").write_text("good 8 0\ngappy 8 1\nnowhere 8 0\n")
    config = DataConfig(source="frames", val_list=str(tmp_path / "list.txt"), data_root=str(tmp_path),
                        resize_short=None, crop_size=16, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    report = DataReport("val")
    items = list(build_test_dataset(config, "val", report=report))
    assert [int(index) for _, _, index in items] == [0]
    print(f"\nframes summary: {report.summaries[0]}")
    assert report.summaries[0].skipped == {"frame_gap": 1, "missing": 1}
    # Decoding is parallel, so the two errors arrive in either order.
    messages = sorted(str(error) for error in report.errors)
    assert len(messages) == 2
    assert any("gappy" in m and "img_00005.jpg missing" in m for m in messages)
    assert any("nowhere" in m and "no such frame folder" in m for m in messages)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"gappy: frame folder with gaps"):
        list(build_test_dataset(config.replace(on_error="raise", num_parallel_calls=1), "val"))
