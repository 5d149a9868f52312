"""Where frames come from: video files (PyAV), JPEG folders, the synthetic set.

A source owns a list of `VideoRecord`s and reads the frames a sampler asks
for: `source.read(record, sampler, rng)` returns uint8 frames
`(len(indices), H, W, 3)` or raises `DataError` naming the file and why.
The TFRecord source is streamed and lives in `tsm_keras.data.tfrecords`.
"""

import bisect
import os
import stat

import numpy as np

from tsm_keras.data import synthetic
from tsm_keras.data.annotations import VideoRecord, load_label_map, read_list
from tsm_keras.data.report import DataError

# Seek forward (to the key frame before the next wanted frame) only when it
# skips at least this many frames; shorter gaps are cheaper to decode through.
SEEK_MIN_GAP = 24

# No decoder outputs a frame more than this many frames away from its place
# in decode order (H.264/HEVC hold at most 16 pictures for reordering);
# timestamps that claim more (a concatenated file starting again at 0) do
# not order the frames.
MAX_REORDER = 16

# Containers whose header stores the duration (the muxer writes it back
# after the last packet: Matroska's segment info, FLV's onMetaData), so
# packets ending well before it mean the file lost its end. Other formats
# estimate the duration from the bitrate or from the file's own end, which
# proves nothing (mp4 and avi store a frame count, checked instead).
DURATION_IN_HEADER = frozenset({"matroska", "webm", "flv"})


def resized_shape(height, width, short_side):
    """`(h, w)` with the short side `short_side`, mmcv `rescale_size` rounding."""
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class VideoReader:
    """Decodes chosen frames of one video file with PyAV.

    The file is first demuxed without decoding to index its frames (packet
    timestamps in display order and key frames): this gives an exact frame
    count even for containers that do not store one (webm), and lets the
    reader seek to the key frame before a wanted frame when that skips more
    than `SEEK_MIN_GAP` frames, and otherwise decode straight through.
    Packets of unwanted frames are sent with `skip_frame = NONREF`, so the
    decoder drops those no other frame references (most B-frames); only the
    wanted frames are converted to RGB (and resized, by FFmpeg's swscale,
    when `short_side` is given). PyAV releases the GIL while decoding, so
    parallel `tf.data` calls decode on several cores.

    When the timestamps cannot order the frames (missing, repeated, as in
    two MPEG-TS files concatenated, or jumping back further than any
    decoder reorders), frame `i` is the `i`-th frame out of a sequential
    decode instead. Every failure of the file (the OS, the demuxer, the
    decoder) raises `DataError` naming the file and the reason; a file
    that ends before what its container declares (frame count, or the
    duration Matroska, WebM and FLV store in their header) is "truncated".

    Args:
        path: video file.
        decode_threads: FFmpeg decoder threads (1: one thread; 0: FFmpeg picks).

    Example:

    >>> reader = VideoReader("clip.mp4")
    >>> frames = reader.read([0, 10, 20], short_side=128)
    """

    def __init__(self, path, decode_threads=1):
        self.path = os.fspath(path)
        self.decode_threads = decode_threads
        check_video_file(self.path)
        self._index()

    def _open(self):
        return open_container(self.path)

    def _index(self):
        container = self._open()
        try:
            pts, keys, truncated = self._scan(container)
        except DataError:
            raise
        except Exception as error:  # e.g. a stream without a decoder context (AttributeError)
            raise DataError(self.path, "not_video", describe_error(error)) from None
        finally:
            _close(container)
        if not pts:
            raise DataError(self.path, "no_frames", truncated or "no video packets")
        if truncated is not None:
            raise DataError(self.path, "truncated", truncated)
        self.num_frames = len(pts)
        self._rank = _display_ranks(pts)
        if self._rank is None:
            # Timestamps cannot order the frames: count packets, decode sequentially.
            self.pts = None
            self.key_indices = [0]
        else:
            self.pts = sorted(pts)
            self.key_indices = sorted(self._rank[value] for value, key in zip(pts, keys) if key) or [0]

    def _scan(self, container):
        """Demux every packet: video pts and key flags in decode order, and
        the reason the file is truncated (None if it is whole)."""
        if not container.streams.video:
            raise DataError(self.path, "not_video", "no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context
        if codec is None:
            raise DataError(self.path, "not_video", "the video stream has no decoder (codec parameters missing)")
        if not (codec.height > 0 and codec.width > 0):
            raise DataError(self.path, "not_video", f"picture size {codec.width}x{codec.height}")
        self.height, self.width = codec.height, codec.width
        pts, keys, durations = [], [], []
        end_time = None  # seconds: the latest packet end over all streams
        truncated = None
        frame_time = _frame_time(stream)
        last_is_corrupt = False
        try:
            for packet in container.demux():
                if packet.size == 0:
                    continue
                last_is_corrupt = packet.is_corrupt
                is_video = packet.stream.index == stream.index
                if packet.pts is not None and packet.time_base is not None:
                    duration = float((packet.duration or 0) * packet.time_base) or (frame_time if is_video else 0.0)
                    end = float(packet.pts * packet.time_base) + duration
                    end_time = end if end_time is None else max(end_time, end)
                if is_video:
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
                    durations.append(packet.duration)
        except Exception as error:  # the demuxer gave up before the end of the file
            truncated = describe_error(error)
        if truncated is None and last_is_corrupt:
            # The demuxer hands over what is left of a packet the file ends inside of.
            truncated = "the file ends inside its last packet"
        if truncated is None and pts:
            truncated = self._missing_end(container, stream, pts, durations, end_time, frame_time)
        return pts, keys, truncated

    def _missing_end(self, container, stream, pts, durations, end_time, frame_time):
        """Why the video ends before what the container declares, or None."""
        declared = stream.frames
        if declared and len(pts) < declared:
            return f"{len(pts)} of the {declared} frames the container declares are present"
        if not set(container.format.name.split(",")) & DURATION_IN_HEADER:
            return None
        if container.duration and end_time is not None:
            # Matroska stores the end time, others may store the length after
            # the first timestamp: take the earlier end, never a false alarm.
            declared_end = (container.duration + min(0, container.start_time or 0)) / 1e6
            if end_time < declared_end - 0.5 * frame_time - 0.002:
                return f"packets end at {end_time:.3f} s of the {declared_end:.3f} s the header declares"
        return _tail_hole(pts, durations)

    def read(self, indices, short_side=None):
        """uint8 frames `(len(indices), H, W, 3)` at 0-based display indices."""
        indices = np.asarray(indices, dtype=np.int64)
        wanted = sorted(set(int(i) for i in indices))
        if wanted[-1] >= self.num_frames or wanted[0] < 0:
            raise IndexError(f"{self.path}: frame indices must be in [0, {self.num_frames})")
        height, width = resized_shape(self.height, self.width, short_side)
        decoded = {}
        container = self._open()
        try:
            stream = container.streams.video[0]
            if self.decode_threads != 1:
                stream.thread_type = "AUTO"
                stream.thread_count = self.decode_threads
            self._decode(container, stream, wanted, decoded, height, width)
        except Exception as error:  # decoder, seek or conversion failure: the file's problem
            if not decoded:
                raise DataError(self.path, "no_frames", describe_error(error)) from None
            raise DataError(self.path, "truncated", f"decoding stopped: {describe_error(error)}") from None
        finally:
            _close(container)
        if not decoded:
            raise DataError(self.path, "no_frames", f"none of {self.num_frames} indexed frames decoded")
        missing = [i for i in wanted if i not in decoded]
        if missing:
            raise DataError(self.path, "truncated", f"frame {missing[0]} of {self.num_frames} does not decode")
        return np.stack([decoded[int(i)] for i in indices])

    def _decode(self, container, stream, wanted, decoded, height, width):
        wanted_set = set(wanted)
        if self.pts is None:
            for position, frame in enumerate(container.decode(stream)):
                if position in wanted_set:
                    decoded[position] = frame_to_rgb(frame, height, width)
                if position >= wanted[-1]:
                    return
            return
        codec = stream.codec_context
        position = -1  # display index of the last frame out of the decoder
        packets = None
        for target in wanted:
            if target in decoded:
                continue
            key = self.key_indices[max(0, bisect.bisect_right(self.key_indices, target) - 1)]
            if packets is None and key == 0:
                packets = container.demux(stream)  # from the start, no seek needed
            elif packets is None or (key > position and key - position >= SEEK_MIN_GAP) or target <= position:
                container.seek(self.pts[key], backward=True, any_frame=False, stream=stream)
                packets = container.demux(stream)
                position = -1
            for packet in packets:
                # Frames nobody asked for and nothing references are skipped by
                # the decoder (AVDISCARD_NONREF); wanted frames decode fully.
                needed = packet.pts is None or self._rank.get(packet.pts, -1) in wanted_set
                codec.skip_frame = "DEFAULT" if needed else "NONREF"
                for frame in codec.decode(packet):
                    position = self._rank.get(frame.pts, position + 1)
                    if position in wanted_set and position not in decoded:
                        decoded[position] = frame_to_rgb(frame, height, width)
                if position >= target:
                    break
            else:
                return  # end of stream (the final empty packet flushed the decoder)


def frame_to_rgb(frame, height, width):
    """RGB uint8 `(height, width, 3)` of a PyAV frame, resized if needed."""
    if frame.height == height and frame.width == width:
        return frame.to_ndarray(format="rgb24")
    # Scale in the decoder's pixel format, then convert: swscale's one-step
    # scale+convert path shifts flat colours by 1-2 levels.
    return frame.reformat(width=width, height=height, interpolation="BILINEAR").to_ndarray(format="rgb24")


def _short(error):
    text = str(error).strip()
    return text if len(text) < 160 else text[:157] + "..."


def describe_error(error):
    """One line about an exception: the message, prefixed by the type when
    the type says more than FFmpeg's own messages do."""
    import av

    if isinstance(error, av.FFmpegError) or not str(error).strip():
        return _short(error) or type(error).__name__
    return _short(f"{type(error).__name__}: {error}")


def _close(container):
    try:
        container.close()
    except Exception:  # closing a broken file must not hide why it failed
        pass


def _display_ranks(pts):
    """`{pts: display position}` from packet pts in decode order, or None
    when the timestamps cannot order the frames (missing or repeated, or a
    frame placed more than `MAX_REORDER` frames from its decode position)."""
    if any(value is None for value in pts) or len(set(pts)) != len(pts):
        return None
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    if np.abs(order - np.arange(len(pts))).max() > MAX_REORDER:
        return None
    return {pts[decode_position]: position for position, decode_position in enumerate(order)}


def _frame_time(stream):
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0


def _tail_hole(pts, durations):
    """Why a constant-rate video lost frames among its last ones, or None.

    A cut in the last group of pictures keeps its P-frame and loses the
    B-frames decoded after it and shown before it, so the timestamps have
    holes of a few frames near the end. Only decided for a video whose
    packets all last the same time `d`, whose frames are `d` apart up to its
    last `MAX_REORDER + 1`, and whose last frames are whole multiples of `d`
    apart, each hole shorter than the `MAX_REORDER` frames a decoder can
    reorder: a variable frame rate or a longer pause proves nothing.
    """
    if None in pts or len(set(durations)) != 1 or not durations[0] or len(pts) <= MAX_REORDER + 1:
        return None
    frame = durations[0]
    gaps = np.diff(np.sort(np.asarray(pts, dtype=np.int64)))
    body, tail = gaps[:-MAX_REORDER], gaps[-MAX_REORDER:]
    if (body != frame).any() or (tail % frame).any() or (tail == frame).all() or tail.max() > MAX_REORDER * frame:
        return None
    missing = int((tail // frame - 1).sum())
    return f"{missing} frame(s) missing among the last {MAX_REORDER + 1} of a constant-rate video"


def open_container(path):
    """The PyAV container of a video file, or `DataError` naming what is wrong.

    Call `check_video_file` first (VideoReader does, once).
    """
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except Exception as error:  # whatever FFmpeg or PyAV raise, it is this file's problem
        reason = "unreadable" if isinstance(error, PermissionError) else "not_video"
        raise DataError(path, reason, describe_error(error)) from None


def check_video_file(path):
    """Raise `DataError` unless `path` is a non-empty regular file.

    Checked before FFmpeg opens it: a directory or a FIFO (which would
    block the reader forever) is not a video, an invalid path (a NUL byte)
    is missing.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        raise DataError(path, "missing") from None
    except OSError as error:
        raise DataError(path, "unreadable", error.strerror or str(error)) from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(path, "not_video", "a directory, not a video file")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(path, "not_video", "not a regular file")
    if info.st_size == 0:
        raise DataError(path, "empty")


class VideoSource:
    """Video files listed in an MMAction2 video list (`path label`).

    Args:
        records: list of `VideoRecord`.
        short_side: resize target of the short side at decode (None = keep).
        decode_threads: FFmpeg threads per decoder.
    """

    kind = "video"

    def __init__(self, records, short_side=None, decode_threads=1):
        self.records = records
        self.short_side = short_side
        self.decode_threads = decode_threads

    def read(self, record, sampler, rng):
        reader = VideoReader(record.path, self.decode_threads)
        indices = sampler(reader.num_frames, rng)
        return reader.read(indices, self.short_side)


class FrameFolderSource:
    """JPEG frame folders from an MMAction2 rawframe list.

    Frame `i` (0-based) of a folder is `filename_tmpl.format(i + start_index)`.
    The first time a folder is read, all of its `total_frames` files are
    checked to exist (a gap anywhere is reported, naming the first missing
    file); frames are decoded with `tf.io.decode_jpeg`.

    Args:
        records: list of `VideoRecord` with `num_frames`.
        filename_tmpl: e.g. `"img_{:05d}.jpg"`.
        start_index: number of the first frame file (MMAction2: 1).
    """

    kind = "frames"

    def __init__(self, records, filename_tmpl="img_{:05d}.jpg", start_index=1):
        self.records = records
        self.filename_tmpl = filename_tmpl
        self.start_index = start_index
        self._checked = set()

    def _check_folder(self, record):
        if record.path in self._checked:
            return
        if not os.path.isdir(record.path):
            raise DataError(record.path, "missing", "no such frame folder")
        if record.num_frames == 0:
            raise DataError(record.path, "no_frames", "total_frames is 0")
        try:
            # Regular files only (symlinks followed): a directory or a dangling
            # link named like a frame is a gap.
            with os.scandir(record.path) as entries:
                present = {entry.name for entry in entries if entry.is_file()}
        except OSError as error:
            raise DataError(record.path, "unreadable", error.strerror or str(error)) from None
        for position in range(record.num_frames):  # stops at the first gap: at most len(present) + 1 names
            name = self.filename_tmpl.format(position + self.start_index)
            if name not in present:
                raise DataError(record.path, "frame_gap",
                                f"{name} missing (list says {record.num_frames} frames)")
        self._checked.add(record.path)

    def read(self, record, sampler, rng):
        import tensorflow as tf

        self._check_folder(record)
        indices = sampler(record.num_frames, rng)
        frames = {}
        for position in sorted(set(int(i) for i in indices)):
            path = os.path.join(record.path, self.filename_tmpl.format(position + self.start_index))
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:  # removed since the folder was checked
                raise DataError(path, "missing", "frame file") from None
            except OSError as error:
                raise DataError(path, "unreadable", error.strerror or str(error)) from None
            try:
                frames[position] = tf.io.decode_jpeg(data, channels=3).numpy()
            except tf.errors.OpError as error:
                raise DataError(path, "bad_frame", _short(error.message)) from None
        shapes = {frame.shape for frame in frames.values()}
        if len(shapes) > 1:
            raise DataError(record.path, "bad_frame", f"frames of different sizes {sorted(shapes)}")
        return np.stack([frames[int(i)] for i in indices])


class SyntheticSource:
    """The built-in synthetic dataset, rendered on demand (no files).

    Args:
        config: `SyntheticConfig`.
        split: `"train"`, `"val"` or `"test"`.
    """

    kind = "synthetic"

    def __init__(self, config, split):
        self.config = config
        self.split = split
        self.records = [
            VideoRecord(path=f"synthetic/{split}/{index:05d}", label=synthetic.video_label(config, index),
                        index=index, num_frames=config.num_frames)
            for index in range(synthetic.num_videos(config, split))
        ]

    def read(self, record, sampler, rng):
        indices = sampler(record.num_frames, rng)
        return synthetic.SyntheticVideo(self.config, self.split, record.index).render(indices)


def class_names(config):
    """Class names of a `DataConfig` (label map file, or the synthetic ones)."""
    if config.label_map is not None:
        return load_label_map(config.label_map)
    if config.source == "synthetic":
        return synthetic.class_names(config.synthetic.num_classes)
    return None


def make_source(config, split, report=None):
    """The source of one split of a `DataConfig` (not for `"tfrecord"`).

    List-level problems are counted in `report` and skipped (or raised when
    `report` is None or `config.on_error == "raise"`).
    """
    if config.source == "synthetic":
        return SyntheticSource(config.synthetic, split)
    list_path = config.list_for(split)
    if list_path is None:
        raise ValueError(f"data.{split}_list: required to read the {split!r} split of source {config.source!r}")
    names = class_names(config)
    num_classes = len(names) if names is not None else None
    list_report = None if config.on_error == "raise" else report
    if config.source == "video":
        records = read_list(list_path, config.root_for(split), "video", num_classes, list_report)
        return VideoSource(records, config.resize_short, config.decode_threads)
    if config.source == "frames":
        records = read_list(list_path, config.root_for(split), "frames", num_classes, list_report)
        return FrameFolderSource(records, config.filename_tmpl, config.frame_start_index)
    raise ValueError(f"source {config.source!r} has no record list (use tsm_keras.data.tfrecords)")
