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
"""

from tsm_keras.layers import (
    BIDIRECTIONAL,
    DIRECTIONS,
    NON_LOCAL_MODES,
    NonLocal,
    TemporalPool,
    TemporalShift,
)

SHIFT_PLACES = ("blockres", "block")


class TemporalContext:
    """Inserts TemporalShift, TemporalPool and NonLocal layers into a backbone.

    Args:
        num_segments: int, frames per clip at the network input.
        shift_div: int, `1 / shift_div` of the channels move each way;
            `0` builds the TSN twin (no shift layers at all).
        shift_place: `"blockres"` (shift the residual branch) or `"block"`
            (shift the whole block input).
        direction: `"bidirectional"` (offline) or `"unidirectional"` (online).
        non_local: `None` or a Non-local mode (`"dot_product"`, `"gaussian"`,
            `"embedded_gaussian"`).
        temporal_pool: bool, halve T before stage 2 (ResNet only).
        bn_momentum: float, Keras BatchNorm momentum for layers created here.

    Example:

    >>> context = TemporalContext(num_segments=8)
    >>> frames = keras.Input((56, 56, 64))
    >>> context.shift(frames, name="layer1_block0_shift").shape
    (None, 56, 56, 64)
    """

    def __init__(
        self,
        num_segments,
        shift_div=8,
        shift_place="blockres",
        direction=BIDIRECTIONAL,
        non_local=None,
        temporal_pool=False,
        bn_momentum=0.9,
    ):
        if shift_place not in SHIFT_PLACES:
            raise ValueError(f"shift_place must be one of {SHIFT_PLACES}, got {shift_place!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if non_local is not None and non_local not in NON_LOCAL_MODES:
            raise ValueError(
                f"non_local must be None or one of {NON_LOCAL_MODES}, got {non_local!r}"
            )
        self.num_segments = int(num_segments)
        self.shift_div = int(shift_div or 0)
        self.shift_place = shift_place
        self.direction = direction
        self.non_local_mode = non_local
        self.use_temporal_pool = bool(temporal_pool)
        self.bn_momentum = bn_momentum

    @property
    def shifts(self):
        return self.shift_div > 0

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
        """Max-pool over time when enabled; later layers see half the frames."""
        if not self.use_temporal_pool:
            return x
        pool = TemporalPool(num_segments=self.num_segments, name=name)
        self.num_segments = pool.output_segments
        return pool(x)

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
