"""`TSMSpec`: the architecture of a TSM, its defaults and its validation, in one place.

The models take a spec: the offline `TSM` (its `get_config` is the spec's
dict) and the per-frame `OnlineTSM`; `build_tsm(**fields)` builds one, and
the `model:` section of a training config is a spec plus training-only keys.
The allowed values are declared where they are implemented and gathered
here:

- `SHIFT_PLACES` (`tsm_keras.models.temporal`): `"blockres"`, `"block"`;
- `DIRECTIONS` (`tsm_keras.layers`): `"bidirectional"`, `"unidirectional"`;
- `NON_LOCAL_MODES` (`tsm_keras.layers`): `"dot_product"`, `"gaussian"`,
  `"embedded_gaussian"`;
- `LAYOUTS` (`tsm_keras.models.layout`): `"keras"`, `"torch"`.

What a backbone supports (layouts, shift placements, Non-local blocks,
temporal pooling) is asked of its registered `BackboneSpec`.
"""

import dataclasses
from typing import Optional

from tsm_keras.layers import DIRECTIONS, NON_LOCAL_MODES
from tsm_keras.models.backbones import BACKBONES, get_backbone
from tsm_keras.models.layout import LAYOUTS
from tsm_keras.models.temporal import SHIFT_PLACES
from tsm_keras.utils.config import (
    ConfigSection,
    boolean,
    ints,
    mapping,
    non_negative_int,
    number,
    one_of,
    option,
    optional,
    positive_int,
)

__all__ = ["DIRECTIONS", "LAYOUTS", "NON_LOCAL_MODES", "SHIFT_PLACES", "TSMSpec"]


def registered_backbones():
    return sorted(BACKBONES)


@dataclasses.dataclass(frozen=True)
class TSMSpec(ConfigSection):
    """The architecture of a Temporal Shift Module network (immutable).

    Construction validates every field and the combinations the backbone
    supports; a problem raises `tsm_keras.utils.config.ConfigError` (a
    `ValueError`) naming the field, e.g. `model.dropout: expected a number in
    [0, 1), got 1.0`.

    Args:
        backbone: registered backbone name (`"resnet50"`, `"resnet101"`,
            `"mobilenet_v2"`, `"mobileone_s0"` .. `"mobileone_s4"`, any name
            added with `tsm_keras.models.backbones.register_backbone`).
        num_classes: int, size of the classifier.
        num_segments: int, frames per clip `T`.
        shift_div: int, `1 / shift_div` of the channels shift each way; `0`
            is the TSN twin (same network, no shift).
        shift_place: `"blockres"` (shift inside the residual branch) or
            `"block"` (shift the block input), among the backbone's
            placements.
        direction: `"bidirectional"` (offline) or `"unidirectional"` (online,
            causal; required by `tsm_keras.build_online`).
        non_local: None or a Non-local mode (`"dot_product"`, `"gaussian"`,
            `"embedded_gaussian"`), for backbones that support it (ResNet:
            after layer2.{0,2} and layer3.{0,2,4}).
        temporal_pool: bool, max-pool time by 2 before stage 2 (backbones that
            support it: ResNet).
        layout: `"keras"` (keras.applications weights) or `"torch"` (PyTorch
            checkpoint layout), among the backbone's layouts.
        input_shape: `(H, W, 3)` of each frame.
        dropout: float in [0, 1), dropout rate before the classifier.
        bn_momentum: float in [0, 1), Keras BatchNorm momentum (0.9 equals
            PyTorch's 0.1; `keras.applications` uses 0.999, which lags in
            short trainings).
        init_std: float > 0, std of the classifier's normal initialiser.
        backbone_options: dict of extra keyword arguments for the backbone
            builder (MobileOne: `deploy`, `shift_segments`); None is `{}`.

    Example:

    >>> spec = TSMSpec(backbone="mobilenet_v2", num_classes=10,
    ...                input_shape=[112, 112, 3])
    >>> spec.input_shape, spec.replace(shift_div=0).shift_div
    ((112, 112, 3), 0)
    """

    SECTION = "model"

    backbone: str = option("resnet50", one_of(registered_backbones))
    num_classes: int = option(400, positive_int())
    num_segments: int = option(8, positive_int())
    shift_div: int = option(8, non_negative_int())
    shift_place: str = option("blockres", one_of(SHIFT_PLACES))
    direction: str = option("bidirectional", one_of(DIRECTIONS))
    non_local: Optional[str] = option(None, optional(one_of(NON_LOCAL_MODES)))
    temporal_pool: bool = option(False, boolean())
    layout: str = option("keras", one_of(LAYOUTS))
    input_shape: tuple = option((224, 224, 3), ints(minimum=1, length=3))
    dropout: float = option(0.5, number(low=0, high=1, high_open=True))
    bn_momentum: float = option(0.9, number(low=0, high=1, high_open=True))
    init_std: float = option(0.001, number(low=0, low_open=True))
    backbone_options: dict = option(check=mapping(null_is_empty=True), default_factory=dict)

    def validate(self):
        """What the backbone supports (asked of its `BackboneSpec`, no name checks)."""
        backbone = get_backbone(self.backbone)
        if self.layout not in backbone.layouts:
            self.fail("layout", f"one of the layouts of {self.backbone!r} {list(backbone.layouts)}", self.layout)
        if self.shifts and self.shift_place not in backbone.shift_places:
            self.fail("shift_place", f"one of the shift places of {self.backbone!r} {list(backbone.shift_places)}",
                      self.shift_place)
        if self.non_local is not None and not backbone.supports_non_local:
            self.fail("non_local", f"null/false for backbone {self.backbone!r}", self.non_local)
        if self.temporal_pool and not backbone.supports_temporal_pool:
            self.fail("temporal_pool", f"null/false for backbone {self.backbone!r}", self.temporal_pool)

    @property
    def shifts(self):
        """Whether the network shifts channels (`shift_div > 0`; else the TSN twin)."""
        return self.shift_div > 0

    def __hash__(self):  # the generated one fails on the backbone_options dict
        return hash(repr(self))
