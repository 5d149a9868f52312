"""Where each Keras weight of a TSM lives in a PyTorch checkpoint, per source.

A `KeyScheme` turns a Keras layer name of a `layout="torch"` TSM into the
PyTorch module path that holds the same weights in one checkpoint family:

| source        | example key (ResNet-50, shifted conv of `layer2_block0`)  |
|---------------|-----------------------------------------------------------|
| `mmaction2`   | `backbone.layer2.0.conv1.conv.net.weight`                 |
| `mit`         | `module.base_model.layer2.0.conv1.net.weight`             |
| `mit_online`  | `features.3.conv.0.weight` (MobileNetV2 only)             |
| `torchvision` | `layer2.0.conv1.weight` (ImageNet backbone, no head)      |

The path is predicted from the Keras model itself (which blocks are shifted,
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
import re

import keras
import numpy as np

from tsm_keras.layers import NonLocal
from tsm_keras.models import mobilenet_v2

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
    """What the key schemes need to know about a `layout="torch"` TSM."""

    def __init__(self, model):
        config = model.tsm_config() if hasattr(model, "tsm_config") else model.get_config()
        self.backbone = config["backbone"]
        self.shift_place = config.get("shift_place", "blockres")
        self.shifts = int(config.get("shift_div") or 0) > 0
        self.temporal_pool = bool(config.get("temporal_pool"))
        self.layer_names = {layer.name for layer in model.layers}

    def has(self, name):
        return name in self.layer_names


_RESNET_BLOCK = re.compile(r"layer(\d)_block(\d+)_(conv\d|bn\d|downsample_conv|downsample_bn|non_local)$")


class KeyScheme:
    """Maps Keras layer names to module paths for one checkpoint family.

    Args:
        prefix: the string in front of every backbone key (e.g.
            `"module.base_model."`), as found in the file.
        head: the module path of the classifier, or None when the family
            has no classifier to import (ImageNet backbones).
    """

    name = "?"
    wraps_shifts = True

    def __init__(self, prefix="", head=None):
        self.prefix = prefix
        self.head = head

    def targets(self, model):
        """Every `TensorTarget` of `model` (weights the file must provide)."""
        structure = ModelStructure(model)
        skipped = set(self.skipped_layers(model))
        targets = []
        for layer in model.layers:
            if not layer.weights or layer.name in skipped:
                continue
            if layer.name == HEAD_LAYER:
                targets += layer_targets(layer, self.head)
                continue
            path = self.module_path(layer.name, structure)
            if path is None:
                raise UnsupportedArchitectureError(
                    f"{self.name} checkpoints have no place for layer {layer.name!r} "
                    f"of a {structure.backbone} TSM"
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

    def module_path(self, name, structure):
        backbone = structure.backbone
        if backbone.startswith("resnet"):
            return self.resnet_path(name, structure)
        if backbone == "mobilenet_v2":
            return self.mobilenet_v2_path(name, structure)
        if backbone.startswith("mobileone"):
            return self.mobileone_path(name, structure)
        raise UnsupportedArchitectureError(f"no checkpoint layout for backbone {backbone!r}")

    # -- ResNet -------------------------------------------------------------
    def resnet_path(self, name, structure):
        if name in ("stem_conv", "stem_bn"):
            return self.resnet_stem(name)
        match = _RESNET_BLOCK.match(name)
        if not match:
            return None
        stage, index, part = int(match.group(1)), int(match.group(2)), match.group(3)
        block = f"layer{stage}"
        if stage == 2 and structure.temporal_pool and self.wraps_shifts:
            block += ".net"  # TemporalPool(layer2)
        block += f".{index}"
        shifted = structure.shifts and structure.has(f"layer{stage}_block{index}_shift")
        if part == "non_local":
            return self.resnet_non_local(block)
        if structure.has(f"layer{stage}_block{index}_non_local"):
            block = self.resnet_wrapped_by_non_local(block)
        if shifted and self.wraps_shifts and structure.shift_place == "block":
            block += ".net"
        shift_conv1 = shifted and self.wraps_shifts and structure.shift_place == "blockres"
        return block + "." + self.resnet_part(part, shift_conv1)

    def resnet_stem(self, name):
        return {"stem_conv": "conv1", "stem_bn": "bn1"}[name]

    def resnet_part(self, part, shift_conv1):
        """torchvision module names (also mit-han-lab's base_model)."""
        if part.startswith("downsample"):
            return "downsample.0" if part.endswith("conv") else "downsample.1"
        kind, number = part[:-1], part[-1]
        path = f"{kind}{number}"
        return path + ".net" if kind == "conv" and number == "1" and shift_conv1 else path

    def resnet_non_local(self, block):
        raise UnsupportedArchitectureError(f"{self.name} checkpoints have no Non-local layout")

    def resnet_wrapped_by_non_local(self, block):
        raise UnsupportedArchitectureError(f"{self.name} checkpoints have no Non-local layout")

    # -- MobileNetV2 ---------------------------------------------------------
    def mobilenet_v2_path(self, name, structure):
        if name in ("stem_conv", "stem_bn"):
            return f"features.0.{0 if name == 'stem_conv' else 1}"
        if name in ("last_conv", "last_bn"):
            return f"features.18.{0 if name == 'last_conv' else 1}"
        match = re.match(r"block(\d+)_(expand|depthwise|project)_(conv|bn)$", name)
        if not match:
            return None
        index, part, kind = int(match.group(1)), match.group(2), match.group(3)
        expansion = mobilenet_v2.block_settings()[index][1]
        parts = ("expand", "depthwise", "project") if expansion != 1 else ("depthwise", "project")
        # mit-han-lab / online demo: flat Sequential conv, bn, relu6 per part.
        position = 3 * parts.index(part) + (0 if kind == "conv" else 1)
        path = f"features.{index + 1}.conv.{position}"
        if self._mobilenet_v2_shift_wrapped(index, part, kind, structure):
            path += ".net"
        return path

    def _mobilenet_v2_shift_wrapped(self, index, part, kind, structure):
        shifted = structure.shifts and structure.has(f"block{index}_shift")
        if shifted and structure.shift_place != "blockres":
            raise UnsupportedArchitectureError(
                f"{self.name} MobileNetV2 checkpoints only have the 'blockres' shift "
                "(before the expansion conv)"
            )
        return self.wraps_shifts and shifted and part == "expand" and kind == "conv"

    # -- MobileOne -------------------------------------------------------------
    def mobileone_path(self, name, structure):
        raise UnsupportedArchitectureError(f"{self.name} checkpoints have no MobileOne layout")


class MMAction2Scheme(KeyScheme):
    """MMAction2 `Recognizer2D`: `backbone.*` (mmcv `ConvModule`s), `cls_head.fc_cls`."""

    name = "mmaction2"

    def __init__(self, prefix="backbone.", head="cls_head.fc_cls"):
        super().__init__(prefix, head)

    def resnet_stem(self, name):
        return {"stem_conv": "conv1.conv", "stem_bn": "conv1.bn"}[name]

    def resnet_part(self, part, shift_conv1):
        if part.startswith("downsample"):
            return "downsample." + ("conv" if part.endswith("conv") else "bn")
        kind, number = part[:-1], part[-1]
        if kind == "bn":
            return f"conv{number}.bn"
        return f"conv{number}.conv" + (".net" if number == "1" and shift_conv1 else "")

    def resnet_non_local(self, block):
        return block + ".non_local_block"

    def resnet_wrapped_by_non_local(self, block):
        return block + ".block"

    def mobilenet_v2_path(self, name, structure):
        fixed = {
            "stem_conv": "conv1.conv",
            "stem_bn": "conv1.bn",
            "last_conv": "conv2.conv",
            "last_bn": "conv2.bn",
        }
        if name in fixed:
            return fixed[name]
        match = re.match(r"block(\d+)_(expand|depthwise|project)_(conv|bn)$", name)
        if not match:
            return None
        index, part, kind = int(match.group(1)), match.group(2), match.group(3)
        stage, position_in_stage = _mobilenet_v2_stage_position(index)
        expansion = mobilenet_v2.block_settings()[index][1]
        parts = ("expand", "depthwise", "project") if expansion != 1 else ("depthwise", "project")
        path = f"layer{stage}.{position_in_stage}.conv.{parts.index(part)}"
        shifted = structure.shifts and structure.has(f"block{index}_shift")
        if shifted and structure.shift_place != "blockres":
            raise UnsupportedArchitectureError(
                "MMAction2 MobileNetV2 checkpoints only have the 'blockres' shift"
            )
        if shifted and part == "expand":  # TemporalShift wraps the whole ConvModule
            path += ".net"
        return f"{path}.{kind}"

    def mobileone_path(self, name, structure):
        match = re.match(
            r"(stage0|stage(\d)_block(\d+)_(dw|pw))_"
            r"(branch(\d+)_(conv|bn)|scale_(conv|bn)|identity_bn|se_reduce|se_expand|reparam_conv)$",
            name,
        )
        if not match:
            return None
        block, stage, unit, kind, part = (match.group(i) for i in range(1, 6))
        if block == "stage0":
            path = "stage0"
        else:
            path = f"stage{stage}.{2 * int(unit) + (0 if kind == 'dw' else 1)}"
        if structure.shifts:  # MobileOneTSM wraps every block, the stem included
            path += ".net"
        if part.startswith("branch"):
            return f"{path}.branch_conv_list.{match.group(6)}." + (
                "conv" if match.group(7) == "conv" else "norm"
            )
        return path + {
            "scale_conv": ".branch_scale.conv",
            "scale_bn": ".branch_scale.norm",
            "identity_bn": ".branch_norm",
            "se_reduce": ".se.conv1.conv",
            "se_expand": ".se.conv2.conv",
            "reparam_conv": ".branch_reparam",
        }[part]


def _mobilenet_v2_stage_position(index):
    """`(stage 1..7, position)` of global inverted-residual block `index`."""
    position = index
    for stage, (_, _, repeats, _) in enumerate(mobilenet_v2.INVERTED_RESIDUAL_SETTINGS, start=1):
        if position < repeats:
            return stage, position
        position -= repeats
    raise ValueError(f"MobileNetV2 has no block {index}")


class MitScheme(KeyScheme):
    """mit-han-lab `TSN`: `module.base_model.*` (torchvision names), `module.new_fc`."""

    name = "mit"

    def __init__(self, prefix="module.base_model.", head="module.new_fc"):
        super().__init__(prefix, head)


class MitOnlineScheme(KeyScheme):
    """mit-han-lab `online_demo` MobileNetV2: `features.*`, `classifier`, no wrappers."""

    name = "mit_online"
    wraps_shifts = False

    def __init__(self, prefix="", head="classifier"):
        super().__init__(prefix, head)

    def module_path(self, name, structure):
        if structure.backbone != "mobilenet_v2":
            raise UnsupportedArchitectureError("the mit-han-lab online checkpoint is MobileNetV2")
        return super().module_path(name, structure)


class TorchvisionScheme(KeyScheme):
    """torchvision ImageNet ResNet / MobileNetV2 (no shift wrappers; head not imported)."""

    name = "torchvision"
    wraps_shifts = False

    def __init__(self, prefix="", head=None):
        super().__init__(prefix, head)

    def skipped_layers(self, model):
        """The classifier and Non-local blocks: new layers on an ImageNet backbone."""
        new_layers = [layer.name for layer in model.layers if isinstance(layer, NonLocal)]
        return super().skipped_layers(model) + new_layers

    def resnet_wrapped_by_non_local(self, block):
        return block  # the Non-local blocks are not in the file; blocks keep their names

    def mobilenet_v2_path(self, name, structure):
        if name in ("stem_conv", "stem_bn", "last_conv", "last_bn"):
            return super().mobilenet_v2_path(name, structure)
        match = re.match(r"block(\d+)_(expand|depthwise|project)_(conv|bn)$", name)
        if not match:
            return None
        index, part, kind = int(match.group(1)), match.group(2), match.group(3)
        expansion = mobilenet_v2.block_settings()[index][1]
        # torchvision: Conv2dNormActivation(conv, bn, relu6) per part, then conv, bn.
        parts = ("expand", "depthwise") if expansion != 1 else ("depthwise",)
        if part in parts:
            path = f"conv.{parts.index(part)}.{0 if kind == 'conv' else 1}"
        else:
            path = f"conv.{len(parts) + (0 if kind == 'conv' else 1)}"
        return f"features.{index + 1}.{path}"


SCHEMES = {
    "mmaction2": MMAction2Scheme,
    "mit": MitScheme,
    "mit_online": MitOnlineScheme,
    "torchvision": TorchvisionScheme,
}


def torchvision_head_keys(backbone):
    """ImageNet classifier keys a torchvision backbone file carries (not imported)."""
    if backbone.startswith("resnet"):
        return ("fc.weight", "fc.bias")
    if backbone == "mobilenet_v2":
        return ("classifier.1.weight", "classifier.1.bias")
    return ()


__all__ = [
    "SCHEMES",
    "SOURCES",
    "KeyScheme",
    "TensorTarget",
    "UnsupportedArchitectureError",
]
