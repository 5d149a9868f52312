"""The temporal shift: the one operation that turns a 2D CNN into a TSM."""

import keras
from keras import ops

BIDIRECTIONAL = "bidirectional"
UNIDIRECTIONAL = "unidirectional"
DIRECTIONS = (BIDIRECTIONAL, UNIDIRECTIONAL)


def shift_fold(channels, shift_div):
    """Channels moved per direction: `channels // shift_div` (0 disables)."""
    if not shift_div:
        return 0
    return channels // shift_div


@keras.saving.register_keras_serializable(package="tsm_keras")
class TemporalShift(keras.layers.Layer):
    """Shifts a fraction of the channels one frame along time.

    The input holds the frames of each clip one after another in the batch
    dimension, `(N * T, H, W, C)`. With `fold = C // shift_div`:

    - `direction="bidirectional"` (offline TSM): channels `[0:fold]` take the
      value of the next frame (zero at the last frame), channels
      `[fold:2*fold]` the value of the previous frame (zero at the first
      frame); the rest are unchanged.
    - `direction="unidirectional"` (online TSM): channels `[0:fold]` take the
      value of the previous frame (zero at the first frame); the rest are
      unchanged. The output at frame `t` depends only on frames `<= t`.

    The shift is written with slicing, zero padding and one concatenation, so
    that it adds no parameters and quantizes to a pure int8 LiteRT graph.

    Args:
        num_segments: int, frames per clip `T`.
        shift_div: int, `1 / shift_div` of the channels move each way.
            `0` disables the shift (the layer becomes the identity).
        direction: `"bidirectional"` or `"unidirectional"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> shift = TemporalShift(num_segments=8)
    >>> frames = keras.random.normal((2 * 8, 56, 56, 64))
    >>> shift(frames).shape
    (16, 56, 56, 64)
    """

    def __init__(self, num_segments, shift_div=8, direction=BIDIRECTIONAL, **kwargs):
        super().__init__(**kwargs)
        if int(num_segments) < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments!r}")
        if shift_div is None or int(shift_div) < 0:
            raise ValueError(f"shift_div must be >= 0 (0 disables), got {shift_div!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.num_segments = int(num_segments)
        self.shift_div = int(shift_div)
        self.direction = direction
        self.supports_masking = False

    def call(self, inputs):
        channels = inputs.shape[-1]
        fold = shift_fold(channels, self.shift_div)
        if fold == 0:
            return inputs
        frame_shape = tuple(inputs.shape[1:])
        if any(dim is None for dim in frame_shape):
            frame_shape = tuple(ops.shape(inputs)[1:])
        clips = ops.reshape(inputs, (-1, self.num_segments) + frame_shape)
        rank = len(frame_shape) + 2
        pad_after = [[0, 0], [0, 1]] + [[0, 0]] * (rank - 2)
        pad_before = [[0, 0], [1, 0]] + [[0, 0]] * (rank - 2)
        if self.direction == BIDIRECTIONAL:
            from_next = ops.pad(clips[:, 1:, ..., :fold], pad_after)
            from_previous = ops.pad(clips[:, :-1, ..., fold : 2 * fold], pad_before)
            shifted = ops.concatenate(
                [from_next, from_previous, clips[..., 2 * fold :]], axis=-1
            )
        else:
            from_previous = ops.pad(clips[:, :-1, ..., :fold], pad_before)
            shifted = ops.concatenate([from_previous, clips[..., fold:]], axis=-1)
        return ops.reshape(shifted, ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_segments=self.num_segments,
            shift_div=self.shift_div,
            direction=self.direction,
        )
        return config
