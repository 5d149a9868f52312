"""The registry of 2D backbones a TSM can be built on, one module per family.

Each module exports complete `BackboneSpec`s (builder for both layouts,
supported options, defaults, PyTorch key mapping per checkpoint family, how
to recognise its checkpoints). The registry lists them explicitly: adding a
backbone is one module and one line here.
"""

from tsm_keras.models.backbones import mobilenet_v2, mobileone, resnet, resnet_basic
from tsm_keras.models.backbones.base import BackboneSpec

BACKBONES = {
    spec.name: spec
    for spec in (
        resnet.RESNET50,
        resnet.RESNET101,
        *resnet_basic.RESNETS_BASIC,
        mobilenet_v2.MOBILENET_V2,
        *mobileone.MOBILEONE,
    )
}


def get_backbone(name):
    """The `BackboneSpec` registered as `name`."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


__all__ = ["BACKBONES", "BackboneSpec", "get_backbone"]
