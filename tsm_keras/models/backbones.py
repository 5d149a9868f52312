"""Registry of the 2D backbones a TSM can be built on.

A backbone is a function `features(frames, context, layout, **options)` that
builds a 2D CNN trunk on `(N*T, H, W, 3)` frames with the Keras functional
API and calls its `TemporalContext` wherever TSM inserts a temporal op.
"""

import dataclasses
import functools
from typing import Callable, Optional

import keras

from tsm_keras.models import mobilenet_v2, resnet
from tsm_keras.models.layout import LAYOUTS
from tsm_keras.models.temporal import SHIFT_PLACES


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What `build_tsm` needs to know about a backbone.

    Args:
        features: `(frames, context, layout, **options) -> feature map`.
        layouts: the weight layouts it can be built in.
        keras_application: `keras.applications` constructor whose ImageNet
            weights the `"keras"` layout accepts, or None.
        keras_name: maps a `keras.applications` layer name to ours.
        shift_places: the shift placements it implements (`"blockres"`,
            `"block"`).
        supports_non_local: whether it can carry Non-local blocks.
        supports_temporal_pool: whether it can halve T before a stage.
    """

    features: Callable
    layouts: tuple = LAYOUTS
    keras_application: Optional[Callable] = None
    keras_name: Optional[Callable] = None
    shift_places: tuple = SHIFT_PLACES
    supports_non_local: bool = False
    supports_temporal_pool: bool = False


BACKBONES = {
    "resnet50": BackboneSpec(
        features=functools.partial(resnet.resnet_features, depth=50),
        keras_application=keras.applications.ResNet50,
        keras_name=resnet.keras_applications_name,
        supports_non_local=True,
        supports_temporal_pool=True,
    ),
    "resnet101": BackboneSpec(
        features=functools.partial(resnet.resnet_features, depth=101),
        keras_application=keras.applications.ResNet101,
        keras_name=resnet.keras_applications_name,
        supports_non_local=True,
        supports_temporal_pool=True,
    ),
    "mobilenet_v2": BackboneSpec(
        features=mobilenet_v2.mobilenet_v2_features,
        keras_application=keras.applications.MobileNetV2,
        keras_name=mobilenet_v2.keras_applications_name,
    ),
}


def register_backbone(name, spec):
    """Adds a backbone under `name` (used by `tsm_keras.models.mobileone`)."""
    BACKBONES[name] = spec


def get_backbone(name):
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]
