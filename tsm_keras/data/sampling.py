"""Frame index sampling with MMAction2 semantics.

`sample_frames` reproduces `mmaction.datasets.transforms.SampleFrames`
(TSN segment sampling; TSM uses `clip_len=1, frame_interval=1,
num_clips=T`) and `dense_sample_frames` reproduces `DenseSampleFrames`.
Indices are 0-based; the frame-folder source adds its `start_index`.
"""

import numpy as np


def _train_offsets(num_frames, clip_len, frame_interval, num_clips, rng):
    ori_clip_len = clip_len * frame_interval
    avg_interval = (num_frames - ori_clip_len + 1) // num_clips
    if avg_interval > 0:
        # One random offset inside each of `num_clips` equal segments.
        base_offsets = np.arange(num_clips) * avg_interval
        return base_offsets + rng.integers(avg_interval, size=num_clips)
    if num_frames > max(num_clips, ori_clip_len):
        # Fewer frames than segments allow: sorted random starts.
        return np.sort(rng.integers(num_frames - ori_clip_len + 1, size=num_clips))
    if avg_interval == 0:
        ratio = (num_frames - ori_clip_len + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio)
    return np.zeros((num_clips,), dtype=np.int64)


def _test_offsets(num_frames, clip_len, frame_interval, num_clips, twice_sample):
    if clip_len == 1:  # 2D recognisers (TSN / TSM): segment centres.
        avg_interval = num_frames / float(num_clips)
        base_offsets = np.arange(num_clips) * avg_interval
        offsets = base_offsets + avg_interval / 2.0
        if twice_sample:
            offsets = np.concatenate([offsets, base_offsets])
        return offsets
    # 3D-style clips: evenly spread windows (MMAction2 keeps num_clips - 1
    # as the divisor even with twice_sample; so do we).
    ori_clip_len = (clip_len - 1) * frame_interval + 1
    max_offset = max(num_frames - ori_clip_len, 0)
    total_clips = num_clips * 2 if twice_sample else num_clips
    if total_clips > 1:
        if num_clips > 1:
            offset_between = max_offset / float(num_clips - 1)
        else:
            offset_between = float(max_offset)
        return np.round(np.arange(total_clips) * offset_between)
    return np.array([max_offset // 2])


def _finish(offsets, num_frames, clip_len, frame_interval, out_of_bound):
    frame_inds = np.asarray(offsets)[:, None] + np.arange(clip_len)[None, :] * frame_interval
    if out_of_bound == "loop":
        frame_inds = np.mod(frame_inds, num_frames)
    elif out_of_bound == "repeat_last":
        safe = frame_inds < num_frames
        last = np.max(safe * frame_inds, axis=1, keepdims=True)
        frame_inds = np.where(safe, frame_inds, last)
    else:
        raise ValueError(f"out_of_bound must be 'loop' or 'repeat_last', got {out_of_bound!r}")
    return frame_inds.reshape(-1).astype(np.int64)


def sample_frames(num_frames, clip_len=1, frame_interval=1, num_clips=8, test_mode=False,
                  twice_sample=False, out_of_bound="loop", rng=None):
    """Frame indices of one video, MMAction2 `SampleFrames`.

    Training: `num_clips` equal segments of the usable range, one random
    offset in each (videos too short for that fall back to sorted random
    offsets, then to evenly rounded offsets, then to zeros, exactly as
    MMAction2 does). Test with `clip_len == 1`: the centre of each segment,
    `int(i * N / num_clips + N / (2 * num_clips))`; `twice_sample` appends
    the segment starts as a second view. Indices past the end wrap
    (`"loop"`) or repeat the clip's last valid frame (`"repeat_last"`).

    Args:
        num_frames: int, frames in the video (>= 1).
        clip_len, frame_interval, num_clips: MMAction2 arguments.
        test_mode: bool, deterministic test sampling.
        twice_sample: bool, test only: two temporal views.
        out_of_bound: `"loop"` or `"repeat_last"`.
        rng: `numpy.random.Generator` for training offsets.

    Returns:
        int64 array of shape `(views * num_clips * clip_len,)`, views = 2 with
        `twice_sample` at test, else 1.

    Example:

    >>> sample_frames(80, num_clips=8, test_mode=True).tolist()
    [5, 15, 25, 35, 45, 55, 65, 75]
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if test_mode:
        offsets = _test_offsets(num_frames, clip_len, frame_interval, num_clips, twice_sample)
    else:
        rng = rng if rng is not None else np.random.default_rng()
        offsets = _train_offsets(num_frames, clip_len, frame_interval, num_clips, rng)
    return _finish(offsets, num_frames, clip_len, frame_interval, out_of_bound)


def dense_sample_frames(num_frames, clip_len=1, frame_interval=1, num_clips=8, sample_range=64,
                        num_sample_positions=10, test_mode=False, out_of_bound="loop", rng=None):
    """Frame indices of one video, MMAction2 `DenseSampleFrames`.

    `num_clips` offsets `sample_range // num_clips` apart inside a window of
    `sample_range` frames; training draws the window start uniformly from
    `[0, num_frames - sample_range - 1]`, test takes `num_sample_positions`
    evenly spaced starts (`np.linspace(..., dtype=int)`), giving that many
    temporal views. Offsets past the end wrap around.

    Example:

    >>> dense_sample_frames(64, num_clips=8, test_mode=True,
    ...                     num_sample_positions=1).tolist()
    [0, 8, 16, 24, 32, 40, 48, 56]
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    sample_position = max(1, 1 + num_frames - sample_range)
    interval = sample_range // num_clips
    base_offsets = np.arange(num_clips) * interval
    if test_mode:
        starts = np.linspace(0, sample_position - 1, num=num_sample_positions, dtype=int)
    else:
        rng = rng if rng is not None else np.random.default_rng()
        starts = [0 if sample_position == 1 else int(rng.integers(0, sample_position - 1))]
    offsets = np.concatenate([(base_offsets + start) % num_frames for start in starts])
    return _finish(offsets, num_frames, clip_len, frame_interval, out_of_bound)


class FrameSampler:
    """Samples the frame indices a `DataConfig` asks for.

    Args:
        config: `DataConfig`.
        test_mode: bool, test sampling (all temporal views) instead of one
            random training clip.

    Example:

    >>> sampler = FrameSampler(DataConfig(num_clips=4), test_mode=True)
    >>> sampler(40).tolist()
    [5, 15, 25, 35]
    """

    def __init__(self, config, test_mode):
        self.config = config
        self.test_mode = test_mode

    @property
    def num_views(self):
        return self.config.num_test_clips if self.test_mode else 1

    @property
    def num_indices(self):
        return self.num_views * self.config.num_frames_per_clip

    def __call__(self, num_frames, rng=None):
        config = self.config
        if config.dense:
            return dense_sample_frames(
                num_frames, config.clip_len, config.frame_interval, config.num_clips,
                sample_range=config.dense_sample_range, num_sample_positions=config.dense_test_clips,
                test_mode=self.test_mode, out_of_bound=config.out_of_bound, rng=rng)
        return sample_frames(
            num_frames, config.clip_len, config.frame_interval, config.num_clips, test_mode=self.test_mode,
            twice_sample=config.twice_sample and self.test_mode, out_of_bound=config.out_of_bound, rng=rng)
