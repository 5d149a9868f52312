"""The temporal shift: the one operation that turns a 2D CNN into a TSM."""

import keras
import numpy as np
from keras import ops

from tsm_keras.layers import shift_kernel

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
    that it adds no parameters and quantizes to a pure int8 LiteRT graph. On
    the TensorFlow backend of a CPU-only machine it runs as one native kernel
    instead, with the same outputs and gradients; LiteRT exports trace it as
    one depthwise convolution over time with fixed 0/1 taps, which computes
    the same values (`tsm_keras.layers.shift_kernel`).

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

    def call(self, inputs, training=None):
        fold = shift_fold(inputs.shape[-1], self.shift_div)
        if fold == 0:
            return inputs
        offsets = _OFFSETS[self.direction]
        if shift_kernel.usable(inputs):
            return shift_kernel.shift(inputs, self.num_segments, fold, offsets)
        if shift_kernel.portable_form() == "depthwise" and _static_frames(inputs):
            return _shift_depthwise(inputs, self.num_segments, fold, offsets)
        if not training:
            return _shift(inputs, self.num_segments, fold, offsets)
        # The gradient of a shift is the opposite shift. Given explicitly, the
        # backward pass costs one shift instead of one full-size zero-padded
        # gradient per slice and their sum.
        num_segments = self.num_segments
        opposite = tuple(-offset for offset in offsets)

        @ops.custom_gradient
        def shift_with_gradient(frames):
            def gradient(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return _shift(upstream, num_segments, fold, opposite)

            return _shift(frames, num_segments, fold, offsets), gradient

        return shift_with_gradient(inputs)

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


# The frame each shifted group of `fold` channels takes its value from, in order
# from channel 0: +1 the next frame, -1 the previous one.
_OFFSETS = {BIDIRECTIONAL: (1, -1), UNIDIRECTIONAL: (-1,)}


def _shift(frames, num_segments, fold, offsets):
    """Shifts channel groups `[i*fold:(i+1)*fold]` of `(N*T, ...)` frames along time.

    Group `i` takes the value of frame `t + offsets[i]` (zero where that frame
    is outside the clip); the channels after the groups are unchanged. Slicing,
    zero padding and one concatenation: no parameters, and a pure int8 graph
    once quantized.
    """
    frame_shape = tuple(frames.shape[1:])
    if any(dim is None for dim in frame_shape):
        frame_shape = tuple(ops.shape(frames)[1:])
    clips = ops.reshape(frames, (-1, num_segments) + frame_shape)
    same_frame = [[0, 0]] * len(frame_shape)
    pieces = []
    for group, offset in enumerate(offsets):
        channels = slice(group * fold, (group + 1) * fold)
        if offset > 0:
            pieces.append(ops.pad(clips[:, offset:, ..., channels], [[0, 0], [0, offset]] + same_frame))
        else:
            pieces.append(ops.pad(clips[:, :offset, ..., channels], [[0, 0], [-offset, 0]] + same_frame))
    pieces.append(clips[..., len(offsets) * fold :])
    return ops.reshape(ops.concatenate(pieces, axis=-1), ops.shape(frames))


def _static_frames(frames):
    """Whether `frames` are `(N * T, H, W, C)` with `H`, `W` and `C` known when traced."""
    return len(frames.shape) == 4 and all(dim is not None for dim in frames.shape[1:])


def _shift_depthwise(frames, num_segments, fold, offsets):
    """`_shift` as one depthwise convolution over time with fixed 0/1 taps.

    Each clip becomes an image whose rows are its frames, `(N, T, H * W, C)`,
    and a `3 x 1` depthwise kernel gives each channel one tap equal to 1: on
    the previous frame, the same frame or the next one (zero beyond the clip,
    by the convolution's "same" padding). Every output is one input times 1
    plus zeros, so finite values come out exactly as `_shift` gives them.
    LiteRT runs it as one DEPTHWISE_CONV_2D (an int8 one once quantized), where
    the slicing form is five copies. Frames of static `(H, W, C)` only.
    """
    height, width, channels = frames.shape[1:]
    taps = np.zeros((3, 1, channels, 1), dtype="float32")
    taps[1, 0, :, 0] = 1.0
    for group, offset in enumerate(offsets):
        channels_of_group = slice(group * fold, (group + 1) * fold)
        taps[1, 0, channels_of_group, 0] = 0.0
        taps[1 + offset, 0, channels_of_group, 0] = 1.0
    clips = ops.reshape(frames, (-1, num_segments, height * width, channels))
    taps = ops.convert_to_tensor(taps, dtype=frames.dtype)
    shifted = ops.depthwise_conv(clips, taps, strides=1, padding="same", data_format="channels_last")
    return ops.reshape(shifted, (-1, height, width, channels))
