"""Where each Keras weight of a TSM lives in a PyTorch checkpoint, per source.

A `KeyScheme` turns a Keras layer name of a `layout="torch"` TSM into the
PyTorch module path that holds the same weights in one checkpoint family:

| source        | example key (ResNet-50, shifted conv of `layer2_block0`)  |
|---------------|-----------------------------------------------------------|
| `mmaction2`   | `backbone.layer2.0.conv1.conv.net.weight`                 |
| `mit`         | `module.base_model.layer2.0.conv1.net.weight`             |
| `mit_online`  | `features.3.conv.0.weight` (MobileNetV2 only)             |
| `torchvision` | `layer2.0.conv1.weight` (ImageNet backbone, no head)      |

The backbone-specific part of the path comes from the backbone's
`BackboneSpec.torch_paths` (in `tsm_keras.models.backbones`), passed in by
the caller: this module knows the families (prefix, head, `.net` wrappers,
per-layer-type tensor layouts), not the backbones. The path is predicted from
the Keras model itself (which blocks are shifted,
where, which carry a Non-local block, whether time is pooled), `.net`
segments included where the source's `TemporalShift` / `TemporalPool`
wrappers put them. A checkpoint that disagrees therefore shows up as missing
and unexpected keys rather than being loaded into the wrong place.

Per Keras layer type the variables map as:

- `Conv2D`: `kernel <- weight` `[O, I, kh, kw] -> [kh, kw, I, O]`,
  `bias <- bias`; a Non-local `Conv3d` `[O, I, 1, 1, 1]` drops its time axis;
- `DepthwiseConv2D`: `kernel <- weight` `[C, 1, kh, kw] -> [kh, kw, C, 1]`;
- `BatchNormalization`: `gamma, beta, moving_mean, moving_variance <-
  weight, bias, running_mean, running_var`;
- `Dense`: `kernel <- weight.T`, `bias <- bias`.
"""

import dataclasses

import keras
import numpy as np

from tsm_keras.layers import NonLocal

SOURCES = ("mmaction2", "mit", "mit_online", "torchvision")
HEAD_LAYER = "fc_cls"


class UnsupportedArchitectureError(ValueError):
    """The checkpoint family has no layout for this model."""


@dataclasses.dataclass(frozen=True)
class TensorTarget:
    """One Keras variable and the checkpoint tensor that fills it.

    Args:
        key: the PyTorch state-dict key.
        variable: the Keras variable.
        transform: `"conv"`, `"depthwise"`, `"dense"`, `"conv3d"` or `"copy"`.
    """

    key: str
    variable: object
    transform: str

    def convert(self, array):
        """The checkpoint array in the Keras layout."""
        if self.transform == "conv3d":
            if array.ndim != 5 or array.shape[2] != 1:
                return None
            array = array[:, :, 0]
            return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else None
        if self.transform == "conv":
            return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else None
        if self.transform == "depthwise":
            return np.transpose(array, (2, 3, 0, 1)) if array.ndim == 4 else None
        if self.transform == "dense":
            return array.T if array.ndim == 2 else None
        return array


_BN_FIELDS = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


def layer_targets(layer, prefix, conv_transform="conv"):
    """`TensorTarget`s of one Keras layer whose PyTorch module path is `prefix`."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [
            TensorTarget(f"{prefix}.{torch_name}", getattr(layer, keras_name), "copy")
            for keras_name, torch_name in _BN_FIELDS
        ]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        targets = [TensorTarget(f"{prefix}.weight", layer.kernel, "depthwise")]
    elif isinstance(layer, keras.layers.Conv2D):
        targets = [TensorTarget(f"{prefix}.weight", layer.kernel, conv_transform)]
    elif isinstance(layer, keras.layers.Dense):
        targets = [TensorTarget(f"{prefix}.weight", layer.kernel, "dense")]
    else:
        raise UnsupportedArchitectureError(
            f"no PyTorch mapping for layer {layer.name!r} of type {type(layer).__name__}"
        )
    if getattr(layer, "use_bias", False):
        targets.append(TensorTarget(f"{prefix}.bias", layer.bias, "copy"))
    return targets


# mmcv `NonLocal3d(sub_sample=True)`: g and phi are `Sequential(ConvModule, MaxPool3d)`.
_NON_LOCAL_PATHS = {
    "g": "g.0.conv",
    "theta": "theta.conv",
    "phi": "phi.0.conv",
    "conv_out": "conv_out.conv",
    "bn": "conv_out.bn",
}


def non_local_targets(layer, prefix):
    """`TensorTarget`s of a `NonLocal` layer as mmcv's `NonLocal3d`."""
    if not layer.sub_sample:
        raise UnsupportedArchitectureError("Non-local import expects sub_sample=True (MMAction2)")
    targets = []
    for name, path in _NON_LOCAL_PATHS.items():
        sublayer = getattr(layer, name, None)
        if sublayer is None:  # no theta / phi in "gaussian" mode
            continue
        targets += layer_targets(sublayer, f"{prefix}.{path}", conv_transform="conv3d")
    return targets


class ModelStructure:
    """What the key paths need to know about a `layout="torch"` TSM."""

    def __init__(self, model):
        config = model.tsm_config() if hasattr(model, "tsm_config") else model.get_config()
        self.backbone = config["backbone"]
        self.shift_place = config.get("shift_place", "blockres")
        self.shifts = int(config.get("shift_div") or 0) > 0
        self.temporal_pool = bool(config.get("temporal_pool"))
        self.layer_names = {layer.name for layer in model.layers}

    def has(self, name):
        return name in self.layer_names


class KeyScheme:
    """Maps Keras layer names to module paths for one checkpoint family.

    Args:
        prefix: the string in front of every backbone key (e.g.
            `"module.base_model."`), as found in the file.
        head: the module path of the classifier, or None when the family
            has no classifier to import (ImageNet backbones).
    """

    name = "?"

    def __init__(self, prefix="", head=None):
        self.prefix = prefix
        self.head = head

    def targets(self, model, backbone):
        """Every `TensorTarget` of `model` (weights the file must provide).

        Args:
            model: a `layout="torch"` TSM.
            backbone: its `BackboneSpec` (the backbone's key paths).
        """
        structure = ModelStructure(model)
        path_of = backbone.torch_paths.get(self.name)
        if path_of is None:
            raise UnsupportedArchitectureError(
                f"{self.name} checkpoints have no {backbone.name} layout"
            )
        skipped = set(self.skipped_layers(model))
        targets = []
        for layer in model.layers:
            if not layer.weights or layer.name in skipped:
                continue
            if layer.name == HEAD_LAYER:
                targets += layer_targets(layer, self.head)
                continue
            path = path_of(layer.name, structure)
            if path is None:
                raise UnsupportedArchitectureError(
                    f"{self.name} checkpoints have no place for layer {layer.name!r} "
                    f"of a {backbone.name} TSM"
                )
            if isinstance(layer, NonLocal):
                targets += non_local_targets(layer, self.prefix + path)
            else:
                targets += layer_targets(layer, self.prefix + path)
        return targets

    def skipped_layers(self, model):
        """Keras layers this family does not provide (kept at their initial values)."""
        if self.head is None and any(layer.name == HEAD_LAYER for layer in model.layers):
            return [HEAD_LAYER]
        return []


class MMAction2Scheme(KeyScheme):
    """MMAction2 `Recognizer2D`: `backbone.*` (mmcv `ConvModule`s), `cls_head.fc_cls`."""

    name = "mmaction2"

    def __init__(self, prefix="backbone.", head="cls_head.fc_cls"):
        super().__init__(prefix, head)


class MitScheme(KeyScheme):
    """mit-han-lab `TSN`: `module.base_model.*` (torchvision names), `module.new_fc`."""

    name = "mit"

    def __init__(self, prefix="module.base_model.", head="module.new_fc"):
        super().__init__(prefix, head)


class MitOnlineScheme(KeyScheme):
    """mit-han-lab `online_demo` MobileNetV2: `features.*`, `classifier`, no wrappers."""

    name = "mit_online"

    def __init__(self, prefix="", head="classifier"):
        super().__init__(prefix, head)


class TorchvisionScheme(KeyScheme):
    """torchvision ImageNet backbones (no shift wrappers; head not imported)."""

    name = "torchvision"

    def __init__(self, prefix="", head=None):
        super().__init__(prefix, head)

    def skipped_layers(self, model):
        """The classifier and Non-local blocks: new layers on an ImageNet backbone."""
        new_layers = [layer.name for layer in model.layers if isinstance(layer, NonLocal)]
        return super().skipped_layers(model) + new_layers


SCHEMES = {
    "mmaction2": MMAction2Scheme,
    "mit": MitScheme,
    "mit_online": MitOnlineScheme,
    "torchvision": TorchvisionScheme,
}


# -- which family a file is ------------------------------------------------------


def infer_source(keys):
    """`(source, backbone prefix)` of a state dict's keys."""
    keys = list(keys)
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return "mmaction2", "backbone."
    for key in keys:
        if "base_model." in key:
            return "mit", key[: key.index("base_model.") + len("base_model.")]
    if "classifier.weight" in keys and any(k.startswith("features.") for k in keys):
        return "mit_online", ""
    if "fc.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision", ""
    if "classifier.1.weight" in keys and any(k.startswith("features.") for k in keys):
        return "torchvision", ""
    raise ValueError(
        "cannot tell which checkpoint family this is (MMAction2 'backbone.'/'cls_head.', "
        "mit-han-lab 'module.base_model.'/'module.new_fc.', mit-han-lab online 'features.'/"
        "'classifier.', torchvision 'layer1.'/'fc.'); first keys: "
        f"{sorted(keys)[:8]}; pass source=... explicitly"
    )


def classifier_path(tensors, source, prefix):
    """Module path of the checkpoint's classifier, or None (torchvision backbones).

    mit-han-lab keeps it in `new_fc` next to `base_model` (`module.new_fc` when
    saved from DataParallel), or inside `base_model` as `fc` / `classifier`
    when trained without dropout (their `test_models.py` renames those).
    """
    if source == "torchvision":
        return None
    if source == "mit":
        root = prefix[: -len("base_model.")]
        for path in (f"{root}new_fc", f"{prefix}fc", f"{prefix}classifier"):
            if f"{path}.weight" in tensors:
                return path
        return f"{root}new_fc"
    return SCHEMES[source]().head


__all__ = [
    "SCHEMES",
    "SOURCES",
    "KeyScheme",
    "ModelStructure",
    "TensorTarget",
    "UnsupportedArchitectureError",
    "classifier_path",
    "infer_source",
]
