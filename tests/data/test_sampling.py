"""Frame sampling against hand-computed MMAction2 SampleFrames / DenseSampleFrames indices."""

import numpy as np
import pytest

from tsm_keras.data import DataConfig, FrameSampler, dense_sample_frames, sample_frames


class ScriptedRng:
    """Stands in for numpy's Generator: `integers` returns scripted values."""

    def __init__(self, *values):
        self.values = list(values)
        self.calls = []

    def integers(self, low, high=None, size=None):
        self.calls.append((low, high, size))
        value = self.values.pop(0)
        return np.asarray(value) if size is not None else int(value)


def test_test_mode_takes_segment_centres():
    # N=80, T=8: segments of 10, centres 5, 15, ..., 75.
    assert sample_frames(80, num_clips=8, test_mode=True).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    # N=30, T=8: avg 3.75, centre of segment i = int(3.75 i + 1.875).
    assert sample_frames(30, num_clips=8, test_mode=True).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]


def test_twice_sample_appends_segment_starts():
    indices = sample_frames(30, num_clips=8, test_mode=True, twice_sample=True)
    # starts int(3.75 i) = 0, 3, 7, 11, 15, 18, 22, 26 after the centres.
    assert indices.tolist() == [1, 5, 9, 13, 16, 20, 24, 28, 0, 3, 7, 11, 15, 18, 22, 26]
    sampler = FrameSampler(DataConfig(num_clips=8, twice_sample=True), test_mode=True)
    assert sampler.num_views == 2 and sampler(30).tolist() == indices.tolist()
    # twice_sample only affects testing.
    assert FrameSampler(DataConfig(num_clips=8, twice_sample=True), test_mode=False).num_indices == 8


def test_train_mode_draws_one_offset_per_segment():
    # N=83, T=8: avg_interval = (83 - 1 + 1) // 8 = 10, offsets 10 i + randint(10).
    rng = ScriptedRng([3, 0, 9, 5, 1, 7, 2, 8])
    indices = sample_frames(83, num_clips=8, rng=rng)
    assert indices.tolist() == [3, 10, 29, 35, 41, 57, 62, 78]
    assert rng.calls == [(10, None, 8)]


def test_train_mode_with_real_rng_stays_in_segments_and_covers_them():
    rng = np.random.default_rng(0)
    draws = np.stack([sample_frames(80, num_clips=8, rng=rng) for _ in range(400)])
    segment = draws // 10
    assert (segment == np.arange(8)).all()
    assert set(np.unique(draws % 10)) == set(range(10))  # every offset in a segment is used


def test_short_video_fallbacks_follow_mmaction2():
    # N=10 < needed, clip_len=4 (ori 4), T=8: avg_interval = 7 // 8 = 0 and
    # 10 > max(8, 4): sorted random starts in [0, 7), then +[0..3] mod 10.
    rng = ScriptedRng([6, 0, 2, 2, 5, 1, 0, 3])
    indices = sample_frames(10, clip_len=4, num_clips=8, rng=rng).reshape(8, 4)
    assert rng.calls == [(7, None, 8)]
    starts = [0, 0, 1, 2, 2, 3, 5, 6]
    assert indices.tolist() == [[(s + k) % 10 for k in range(4)] for s in starts]
    # N=5 < T=8 (clip_len 1): avg_interval = 5 // 8 = 0 and 5 <= 8, so
    # offsets = around(i * 5/8) = 0, 1, 1, 2, 2, 3, 4, 4 (round half to even).
    assert sample_frames(5, num_clips=8, rng=ScriptedRng()).tolist() == [0, 1, 1, 2, 2, 3, 4, 4]
    # Test mode on the same video: int(0.625 i + 0.3125).
    assert sample_frames(5, num_clips=8, test_mode=True).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
    # A one-frame video gives frame 0 everywhere.
    assert sample_frames(1, num_clips=8, rng=np.random.default_rng(0)).tolist() == [0] * 8


def test_clip_len_and_interval_and_out_of_bound():
    # 3D-style test clip: clip_len 4, interval 2 -> ori_clip_len 7, N=5: max_offset 0.
    assert sample_frames(5, clip_len=4, frame_interval=2, num_clips=1, test_mode=True).tolist() == [0, 2, 4, 1]
    repeat = sample_frames(5, clip_len=4, frame_interval=2, num_clips=1, test_mode=True, out_of_bound="repeat_last")
    assert repeat.tolist() == [0, 2, 4, 4]
    # Three clips spread evenly: N=20, ori 7, max_offset 13, offsets round(6.5 i) = 0, 6 (6.5->6), 13.
    indices = sample_frames(20, clip_len=4, frame_interval=2, num_clips=3, test_mode=True)
    assert indices.reshape(3, 4).tolist() == [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]


def test_dense_sampling_windows():
    # N=100, range 64, 8 clips: interval 8; test starts linspace(0, 36, 10) as int.
    indices = dense_sample_frames(100, num_clips=8, sample_range=64, num_sample_positions=10, test_mode=True)
    starts = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert indices.reshape(10, 8).tolist() == [[s + 8 * k for k in range(8)] for s in starts]
    # Training: one window start from randint(0, 36).
    rng = ScriptedRng(17)
    assert dense_sample_frames(100, num_clips=8, rng=rng).tolist() == [17 + 8 * k for k in range(8)]
    assert rng.calls == [(0, 36, None)]
    # Shorter than the window: start 0 and wrap around.
    assert dense_sample_frames(40, num_clips=8, rng=ScriptedRng()).tolist() == [0, 8, 16, 24, 32, 0, 8, 16]


def test_sampler_follows_config():
    config = DataConfig(dense=True, num_clips=8, dense_test_clips=3)
    sampler = FrameSampler(config, test_mode=True)
    assert sampler.num_views == 3 and sampler.num_indices == 24
    assert sampler(100).reshape(3, 8)[:, 0].tolist() == [0, 18, 36]


def test_empty_video_is_an_error():
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        sample_frames(0)
