"""The online (streaming) TSM: one frame in, logits and the shifted channels out.

A TSM trained with `direction="unidirectional"` only moves channels from the
past to the present: at every shifted block, channels `[0:fold]` of frame `t`
come from frame `t - 1` (`fold = C // shift_div`). Run frame by frame, each
shifted block therefore needs one buffer, the first `fold` channels of its
input at the previous frame, and hands its own `x[..., :fold]` on as the
buffer for the next frame (the authors' `online_demo`).

`OnlineTSM` builds that per-frame graph from the SAME spec, backbone code
and classifier head as the offline model: the backbone builder is called
with an `OnlineContext`, whose `shift(x, name)` creates a state input and an
`OnlineTemporalShift` layer instead of a `TemporalShift`. Every other layer keeps its name, so the
offline weights copy over by layer name (`build_online`).

Names (identical in the Keras model, the SavedModel signature and the LiteRT
signature):

- inputs: `image` `(1, H, W, 3)` (normalised like the offline clips) and one
  `state_{shift layer name}` per shifted block, e.g. `state_block2_shift`
  `(1, H_b, W_b, C_b // shift_div)`;
- outputs: `logits` `(1, num_classes)` (this frame's classifier output, no
  averaging) and the next states under the SAME names as the state inputs,
  so an app feeds `outputs[name]` back as `inputs[name]`.

The states are in network order (`state_names`); `init_states()` gives the
zeros a stream starts (or restarts) from.
"""

import dataclasses

import numpy as np
import keras
from keras import ops

from tsm_keras.layers import UNIDIRECTIONAL, shift_fold
from tsm_keras.models.backbones import get_backbone
from tsm_keras.models.head import classifier_head
from tsm_keras.models.spec import TSMSpec
from tsm_keras.models.temporal import TemporalContext
from tsm_keras.models.tsm import split_spec_arguments, with_spec_attributes

IMAGE_NAME = "image"
LOGITS_NAME = "logits"
STATE_PREFIX = "state_"


def state_name(shift_name):
    """The state input/output name of the shift layer `shift_name`."""
    return f"{STATE_PREFIX}{shift_name}"


@keras.saving.register_keras_serializable(package="tsm_keras")
class OnlineTemporalShift(keras.layers.Layer):
    """The uni-directional temporal shift for one frame, with an explicit state.

    Called on `[state, x]`, with `x` the block input of the current frame
    `(B, H, W, C)` and `state` the first `fold = C // shift_div` channels of
    the previous frame's block input `(B, H, W, fold)`, it returns
    `(shifted, next_state)`:

    - `shifted = concat(state, x[..., fold:])`, what `TemporalShift(...,
      direction="unidirectional")` gives for this frame;
    - `next_state = x[..., :fold]`, the state for the next frame.

    Both are slices and one concatenation (no arithmetic), so the layer
    quantizes to int8 without any scale change.

    Args:
        shift_div: int, `1 / shift_div` of the channels come from the past.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> shift = OnlineTemporalShift(shift_div=8)
    >>> shifted, next_state = shift([np.zeros((1, 7, 7, 2)), np.ones((1, 7, 7, 16))])
    >>> shifted.shape, next_state.shape
    ((1, 7, 7, 16), (1, 7, 7, 2))
    """

    def __init__(self, shift_div=8, **kwargs):
        super().__init__(**kwargs)
        if shift_div is None or int(shift_div) < 1:
            raise ValueError(f"shift_div must be >= 1, got {shift_div!r}")
        self.shift_div = int(shift_div)

    def call(self, inputs):
        state, x = inputs
        fold = shift_fold(x.shape[-1], self.shift_div)
        if state.shape[-1] != fold:
            raise ValueError(
                f"{self.name}: state has {state.shape[-1]} channels, expected "
                f"{x.shape[-1]} // {self.shift_div} = {fold}"
            )
        shifted = ops.concatenate([state, x[..., fold:]], axis=-1)
        return shifted, x[..., :fold]

    def compute_output_shape(self, input_shape):
        state_shape, x_shape = input_shape
        return tuple(x_shape), tuple(state_shape)

    def get_config(self):
        config = super().get_config()
        config.update(shift_div=self.shift_div)
        return config


@dataclasses.dataclass(frozen=True, eq=False)
class OnlineContext(TemporalContext):
    """A `TemporalContext` for one frame: each shift reads and writes a state.

    The backbone builders call `context.shift(x, name)` wherever TSM shifts.
    Here that creates a `keras.Input` `state_{name}` of shape
    `(batch_size, H, W, C // shift_div)`, an `OnlineTemporalShift` named
    `name`, and records its next-state output. After the backbone is built,
    `state_inputs` and `next_states` hold them in network order. The
    context's settings are frozen; only these two records grow.

    Args:
        shift_div: int, `1 / shift_div` of the channels are shifted (>= 1).
        shift_place: `"blockres"` or `"block"`, as in the offline model.
        bn_momentum: float, BatchNorm momentum for the layers the backbone
            creates (irrelevant at inference, kept for symmetry).
        batch_size: int, static batch size of the per-frame inputs (1 for
            LiteRT).

    Example:

    >>> context = OnlineContext(shift_div=8)
    >>> x = keras.Input(batch_shape=(1, 56, 56, 24))
    >>> context.shift(x, name="block2_shift").shape
    (1, 56, 56, 24)
    >>> list(context.state_inputs)
    ['state_block2_shift']
    """

    # One frame, uni-directional, no temporal pool or Non-local: the base
    # class validates the rest and leaves those hooks as the identity.
    num_segments: int = 1
    direction: str = UNIDIRECTIONAL
    batch_size: int = 1
    state_inputs: dict = dataclasses.field(default_factory=dict)
    next_states: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if (self.num_segments, self.direction) != (1, UNIDIRECTIONAL):
            raise ValueError(
                "OnlineContext is one frame, uni-directional; got "
                f"num_segments={self.num_segments}, direction={self.direction!r}"
            )
        object.__setattr__(self, "batch_size", int(self.batch_size))

    def shift(self, x, name):
        if not self.shifts:
            return x
        fold = shift_fold(x.shape[-1], self.shift_div)
        if fold == 0:
            return x
        key = state_name(name)
        if key in self.state_inputs:
            raise ValueError(f"two shifts are named {name!r}; state names must be unique")
        state = keras.Input(
            batch_shape=(self.batch_size,) + tuple(x.shape[1:-1]) + (fold,), name=key
        )
        shifted, next_state = OnlineTemporalShift(self.shift_div, name=name)([state, x])
        self.state_inputs[key] = state
        self.next_states[key] = next_state
        return shifted


def check_online_compatible(spec):
    """Raises `ValueError` unless a TSM of `spec` (a `TSMSpec`) can run frame by frame."""
    if spec.direction != UNIDIRECTIONAL and spec.shifts:
        raise ValueError(
            "build_online needs a TSM trained with direction='unidirectional'. This "
            f"model is {spec.direction!r}: its channels [0:fold] come from the "
            "NEXT frame, so its weights expect the future, which a stream does not have. "
            "Train (or fine-tune) with direction='unidirectional' and export that model."
        )
    if spec.temporal_pool:
        raise ValueError(
            "build_online cannot export a TSM with temporal_pool=True: pooling over time "
            "mixes future frames and halves the frame rate (not causal per frame)"
        )
    if spec.non_local:
        raise ValueError(
            f"build_online cannot export a TSM with non_local={spec.non_local!r}: "
            "Non-local blocks attend over the whole clip (not causal per frame)"
        )


@keras.saving.register_keras_serializable(package="tsm_keras")
@with_spec_attributes
class OnlineTSM(keras.Model):
    """Per-frame TSM: `{image, state_*} -> {logits, state_*}`.

    The functional twin of a uni-directional `TSM` for streaming: the same
    `TSMSpec`, backbone and classifier head (same layer names, so weights
    transfer by name), a single frame instead of a clip, and one state per
    shifted block (see the module docstring for the names). Dropout is left
    out (inference only) and so is the consensus: `logits` are this frame's
    classifier output, equal to the offline model's per-frame logits
    (`fc_cls`) at the same frame. The spec's `num_segments` is kept (it is
    the clip length the weights were trained on) but not used.

    Build it from a trained model with `build_online(model)`; the
    constructor takes the offline model's spec and leaves the weights at
    their initial values.

    Args:
        spec: the offline model's `TSMSpec` (`direction="unidirectional"`,
            or `shift_div=0` for the plain per-frame 2D network without
            states; no `temporal_pool`, no `non_local`), or a backbone name
            followed by the other spec fields as keywords (`direction` then
            defaults to `"unidirectional"`).
        batch_size: int, static batch of every input (1 for LiteRT).
        **kwargs: the spec fields (when `spec` is not one) and `keras.Model`
            arguments.

    Example:

    >>> offline = build_tsm("mobilenet_v2", num_classes=5, num_segments=4,
    ...                     direction="unidirectional", input_shape=(64, 64, 3))
    >>> online = build_online(offline)
    >>> states = online.init_states()
    >>> frame = np.zeros((1, 64, 64, 3), "float32")
    >>> outputs = online({"image": frame, **states})
    >>> outputs["logits"].shape, len(online.state_names)
    ((1, 5), 10)
    """

    def __init__(self, spec=None, batch_size=1, **kwargs):
        if not isinstance(spec, TSMSpec):
            kwargs.setdefault("direction", UNIDIRECTIONAL)
        spec, kwargs = split_spec_arguments(spec, kwargs, "online_tsm_{backbone}")
        check_online_compatible(spec)
        context = OnlineContext(
            shift_div=spec.shift_div,
            shift_place=spec.shift_place,
            bn_momentum=spec.bn_momentum,
            batch_size=batch_size,
        )
        image = keras.Input(batch_shape=(int(batch_size),) + spec.input_shape, name=IMAGE_NAME)
        features, _ = get_backbone(spec.backbone).build(
            image, context, layout=spec.layout, **spec.backbone_options
        )
        logits = classifier_head(features, spec, dropout=False)
        inputs = {IMAGE_NAME: image, **context.state_inputs}
        outputs = {LOGITS_NAME: logits, **context.next_states}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.spec = spec
        self.batch_size = int(batch_size)
        self.state_names = tuple(context.state_inputs)
        self.state_shapes = {
            key: tuple(tensor.shape) for key, tensor in context.state_inputs.items()
        }

    def init_states(self):
        """Zero states `{state_name: float32 array}`: the start of every stream."""
        return {key: np.zeros(shape, "float32") for key, shape in self.state_shapes.items()}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.spec.to_dict(),
                "batch_size": self.batch_size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_online(model, batch_size=1):
    """The per-frame `OnlineTSM` of a uni-directional `TSM`, with its weights.

    Args:
        model: a `tsm_keras.TSM` built with `direction="unidirectional"` (or
            `shift_div=0`, the TSN twin, which gives a stateless per-frame
            model), without `temporal_pool` or `non_local`.
        batch_size: int, static batch of the per-frame inputs (1 for LiteRT).

    Returns:
        An `OnlineTSM` whose every weighted layer holds the weights of the
        layer with the same name in `model`.

    Raises:
        ValueError: for a bi-directional model (its weights expect the
            future), temporal pooling or Non-local blocks (not causal per
            frame), or if a weighted layer has no counterpart.

    Example:

    >>> offline = build_tsm("mobilenet_v2", num_classes=27, num_segments=8,
    ...                     direction="unidirectional")
    >>> online = build_online(offline)
    >>> online.state_names[:2]
    ('state_block2_shift', 'state_block4_shift')
    """
    spec = getattr(model, "spec", None)
    if not isinstance(spec, TSMSpec):
        raise TypeError(f"build_online expects a tsm_keras.TSM, got {type(model).__name__}")
    online = OnlineTSM(spec, batch_size=batch_size)  # refuses non-causal specs
    copy_weights_by_name(model, online)
    return online


def copy_weights_by_name(source, target):
    """Copies the weights of every weighted layer of `target` from `source`."""
    source_layers = {layer.name: layer for layer in source.layers}
    missing = []
    for layer in target.layers:
        if not layer.weights:
            continue
        if layer.name not in source_layers:
            missing.append(layer.name)
            continue
        layer.set_weights(source_layers[layer.name].get_weights())
    if missing:
        raise ValueError(f"{source.name} has no layers named {missing} to copy weights from")
    return target
