"""Layers that move between clips `(N, T, ...)` and frames `(N * T, ...)`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tsm_keras")
class MergeSegments(keras.layers.Layer):
    """Folds the time axis of a clip into the batch: `(N, T, ...) -> (N*T, ...)`.

    Frame `t` of clip `n` lands at batch index `n * T + t`, the layout every
    layer of a TSM (and PyTorch's TSM) expects.

    Example:

    >>> MergeSegments()(keras.ops.zeros((2, 8, 32, 32, 3))).shape
    (16, 32, 32, 3)
    """

    def call(self, inputs):
        frame_shape = tuple(inputs.shape[2:])
        if any(dim is None for dim in frame_shape):
            frame_shape = tuple(ops.shape(inputs)[2:])
        return ops.reshape(inputs, (-1,) + frame_shape)

    def compute_output_shape(self, input_shape):
        batch, time = input_shape[0], input_shape[1]
        merged = None if batch is None or time is None else batch * time
        return (merged,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="tsm_keras")
class SegmentConsensus(keras.layers.Layer):
    """Averages per-frame scores over the frames of each clip (TSN consensus).

    Args:
        num_segments: int, frames per clip at this point of the network.
        **kwargs: base layer arguments.

    Example:

    >>> SegmentConsensus(num_segments=8)(keras.ops.ones((16, 400))).shape
    (2, 400)
    """

    def __init__(self, num_segments, **kwargs):
        super().__init__(**kwargs)
        self.num_segments = int(num_segments)

    def call(self, inputs):
        per_clip = ops.reshape(inputs, (-1, self.num_segments) + tuple(inputs.shape[1:]))
        return ops.mean(per_clip, axis=1)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        clips = None if batch is None else batch // self.num_segments
        return (clips,) + tuple(input_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(num_segments=self.num_segments)
        return config


@keras.saving.register_keras_serializable(package="tsm_keras")
class TemporalPool(keras.layers.Layer):
    """Max-pools frames over time: kernel 3, stride 2, padding 1 (mit-han-lab).

    `(N*T, H, W, C) -> (N*ceil(T/2), H, W, C)`; frame `t` of the output is
    the maximum of input frames `2t-1, 2t, 2t+1` (those that exist).

    Args:
        num_segments: int, frames per clip at the input (`T`).
        **kwargs: base layer arguments.

    Example:

    >>> TemporalPool(num_segments=8)(keras.ops.ones((16, 7, 7, 4))).shape
    (8, 7, 7, 4)
    """

    def __init__(self, num_segments, **kwargs):
        super().__init__(**kwargs)
        self.num_segments = int(num_segments)

    @property
    def output_segments(self):
        return (self.num_segments - 1) // 2 + 1

    def call(self, inputs):
        frame_shape = tuple(inputs.shape[1:])
        clips = ops.reshape(inputs, (-1, self.num_segments) + frame_shape)
        lowest = ops.full_like(clips[:, :1], float("-inf"))
        padded = ops.concatenate([lowest, clips, lowest], axis=1)
        steps = self.output_segments
        windows = [padded[:, k : k + 2 * steps - 1 : 2] for k in range(3)]
        pooled = ops.maximum(ops.maximum(windows[0], windows[1]), windows[2])
        return ops.reshape(pooled, (-1,) + frame_shape)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        if batch is not None:
            batch = batch // self.num_segments * self.output_segments
        return (batch,) + tuple(input_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(num_segments=self.num_segments)
        return config
