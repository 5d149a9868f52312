"""PyAV video source: exact frame indexing, seeking, containers and codecs."""

import numpy as np
import pytest

from tests.data.videos import decode_all, encode_video, frame_numbers, numbered_frames
from tsm_keras.data.sources import SEEK_MIN_GAP, VideoReader, resized_shape


@pytest.fixture(scope="module")
def long_gop_video(tmp_path_factory):
    """60 numbered frames, H.264 with B-frames, a key frame every 10 frames."""
    path = tmp_path_factory.mktemp("video") / "numbered.mp4"
    return encode_video(path, numbered_frames(60, 32, 48), gop_size=10)


def test_frame_count_and_sequential_reads_match_the_reference_decoder(long_gop_video):
    reader = VideoReader(long_gop_video)
    assert reader.num_frames == 60 and (reader.height, reader.width) == (32, 48)
    reference = decode_all(long_gop_video)
    assert frame_numbers(reference, 60).tolist() == list(range(60))
    indices = [3, 4, 9, 17, 25, 33, 41, 57]
    np.testing.assert_array_equal(reader.read(indices), reference[indices])


def test_seeking_reads_are_bit_exact(long_gop_video):
    reference = decode_all(long_gop_video)
    reader = VideoReader(long_gop_video)
    # Gaps wider than SEEK_MIN_GAP make the reader seek to the key frame before the target.
    indices = [1, 1 + SEEK_MIN_GAP + 5, 59, 0, 30]
    assert indices[1] - indices[0] > SEEK_MIN_GAP
    frames = reader.read(indices)
    np.testing.assert_array_equal(frames, reference[indices])
    assert frame_numbers(frames, 60).tolist() == indices


def test_resize_at_decode_keeps_the_aspect(long_gop_video):
    frames = VideoReader(long_gop_video).read([0, 59], short_side=16)
    assert frames.shape == (2, 16, 24, 3)
    assert frame_numbers(frames, 60).tolist() == [0, 59]
    assert resized_shape(272, 640, 256) == (256, 602)


@pytest.mark.parametrize(
    "name, codec",
    [("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4"), ("clip.mkv", "libx264")],
)
def test_other_containers_and_codecs(tmp_path, name, codec):
    path = encode_video(tmp_path / name, numbered_frames(24, 32, 32), codec=codec, gop_size=8)
    reader = VideoReader(path)
    assert reader.num_frames == 24
    indices = [0, 5, 11, 23, 12]
    frames = reader.read(indices)
    assert frame_numbers(frames, 24).tolist() == indices
    np.testing.assert_array_equal(frames, decode_all(path)[indices])


def test_decoder_resize_agrees_with_the_tensorflow_resize(tmp_path):
    # Video frames are resized by FFmpeg at decode, other sources by
    # tf.image.resize in the graph: both must give the same picture.
    from tsm_keras.data.transforms import resize_short_side

    ys, xs = np.mgrid[0:48, 0:80]
    image = np.stack([xs * 3, ys * 5, (xs + ys) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    path = encode_video(tmp_path / "gradient.mp4", np.stack([image] * 6))
    reader = VideoReader(path)
    by_decoder = reader.read([2], short_side=24).astype(np.float64)
    by_tensorflow = resize_short_side(reader.read([2]), 24).numpy()
    assert by_decoder.shape == by_tensorflow.shape == (1, 24, 40, 3)
    assert np.abs(by_decoder - by_tensorflow)[:, 2:-2, 2:-2].mean() < 3.0
