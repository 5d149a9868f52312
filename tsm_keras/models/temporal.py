"""How a backbone treats time: the single insertion point for every temporal op.

Backbone builders are plain 2D CNNs written with the Keras functional API.
Wherever the TSM papers put a temporal operation, a builder calls its
`TemporalContext` instead of creating a layer itself:

- `context.shift(x, name)` where a block's input (placement `"block"`) or its
  residual branch (placement `"blockres"`) is shifted;
- `context.temporal_pool(x, name)` before ResNet stage 2;
- `context.non_local(x, name)` after the blocks that carry a Non-local block.

The offline TSM, its TSN twin (no shift) and the online per-frame model
(`tsm_keras.models.online`) are the same backbone code driven by different
contexts, so layer names and weights line up between them by construction.

The context is immutable. A builder that changes the clip length seen by
later layers (the temporal pool halves it; MobileOne's `shift_segments`
narrows what its shifts treat as one clip) derives a new context with
`with_segments` and returns the count it leaves behind, so the caller sizes
the consensus from the builder's answer rather than from a mutated object.
"""

import dataclasses
from typing import Optional

from tsm_keras.layers import (
    BIDIRECTIONAL,
    DIRECTIONS,
    NON_LOCAL_MODES,
    NonLocal,
    TemporalPool,
    TemporalShift,
)

SHIFT_PLACES = ("blockres", "block")


@dataclasses.dataclass(frozen=True)
class TemporalContext:
    """Inserts TemporalShift, TemporalPool and NonLocal layers into a backbone.

    Args:
        num_segments: int, frames per clip at this point of the network.
        shift_div: int, `1 / shift_div` of the channels move each way;
            `0` builds the TSN twin (no shift layers at all).
        shift_place: `"blockres"` (shift the residual branch) or `"block"`
            (shift the whole block input).
        direction: `"bidirectional"` (offline) or `"unidirectional"` (online).
        non_local_mode: `None` or a Non-local mode (`"dot_product"`,
            `"gaussian"`, `"embedded_gaussian"`).
        use_temporal_pool: bool, halve T before stage 2 (ResNet only).
        bn_momentum: float, Keras BatchNorm momentum for layers created here.

    Example:

    >>> context = TemporalContext(num_segments=8)
    >>> frames = keras.Input((56, 56, 64))
    >>> context.shift(frames, name="layer1_block0_shift").shape
    (None, 56, 56, 64)
    >>> pooled, after = context.temporal_pool(frames, name="temporal_pool")
    >>> after.num_segments  # pooling is off: the same context comes back
    8
    """

    num_segments: int
    shift_div: int = 8
    shift_place: str = "blockres"
    direction: str = BIDIRECTIONAL
    non_local_mode: Optional[str] = None
    use_temporal_pool: bool = False
    bn_momentum: float = 0.9

    def __post_init__(self):
        if self.shift_place not in SHIFT_PLACES:
            raise ValueError(
                f"shift_place must be one of {SHIFT_PLACES}, got {self.shift_place!r}"
            )
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.non_local_mode is not None and self.non_local_mode not in NON_LOCAL_MODES:
            raise ValueError(
                f"non_local must be None or one of {NON_LOCAL_MODES}, got {self.non_local_mode!r}"
            )
        object.__setattr__(self, "num_segments", int(self.num_segments))
        object.__setattr__(self, "shift_div", int(self.shift_div or 0))
        object.__setattr__(self, "use_temporal_pool", bool(self.use_temporal_pool))

    @property
    def shifts(self):
        return self.shift_div > 0

    def with_segments(self, num_segments):
        """The same context for clips of `num_segments` frames."""
        return dataclasses.replace(self, num_segments=num_segments)

    def shift(self, x, name):
        """Temporal shift of `x` (identity for the TSN twin)."""
        if not self.shifts:
            return x
        return TemporalShift(
            num_segments=self.num_segments,
            shift_div=self.shift_div,
            direction=self.direction,
            name=name,
        )(x)

    def temporal_pool(self, x, name):
        """Max-pool over time when enabled.

        Returns:
            `(y, context)`: the pooled tensor and the context later layers
            use (half the frames), or `(x, self)` when pooling is off.
        """
        if not self.use_temporal_pool:
            return x, self
        pool = TemporalPool(num_segments=self.num_segments, name=name)
        return pool(x), self.with_segments(pool.output_segments)

    def non_local(self, x, name):
        """Non-local block after `x` when a mode is set."""
        if self.non_local_mode is None:
            return x
        return NonLocal(
            num_segments=self.num_segments,
            mode=self.non_local_mode,
            bn_momentum=self.bn_momentum,
            name=name,
        )(x)
