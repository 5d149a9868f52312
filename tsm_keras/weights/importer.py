"""PyTorch TSM checkpoints (MMAction2, mit-han-lab, torchvision) -> Keras TSM models.

`import_torch_checkpoint(path)` reads a checkpoint without executing it
(`tsm_keras.weights.checkpoint`), works out the architecture from its keys
and shapes, builds the matching `layout="torch"` TSM and fills every weight,
strictly: each tensor of the file is used once and each Keras weight is
filled once, or nothing is loaded and `CheckpointMismatchError` lists the
missing keys, the unexpected keys and the shape mismatches (key and Keras
variable on both sides).

What the keys tell:

| property       | from                                                              |
|----------------|-------------------------------------------------------------------|
| source         | `backbone.`/`cls_head.` (MMAction2), `base_model.` (mit-han-lab), bare `features.` + `classifier.weight` (mit-han-lab online), `fc.`/`classifier.1.` (torchvision) |
| backbone       | `layer4` (ResNet; depth from the blocks of `layer3`), `layer7`/`features.18` (MobileNetV2), `stage0` (MobileOne; variant from the channel widths) |
| num_classes    | the classifier's weight shape                                     |
| shift          | `.net` wrappers: `conv1[.conv].net` = `blockres`, `layerX.Y.net` = `block`, none = TSN (no shift) |
| non_local      | `non_local_block` keys; without `theta` it is `gaussian`           |
| temporal_pool  | `layer2.net.` (the `TemporalPool` wrapper)                        |
| MobileOne deploy | `branch_reparam` keys                                           |

What they cannot tell comes from the caller, else from the training config
text stored in `meta` (read with regular expressions, never executed), else
from the file name (`1x1x16`, `segment8`, `shift8`, `nl-dot-product`), else
from the seed row defaults: `num_segments` (8; MobileOne rows 16),
`shift_div` (8), the Non-local mode when `theta` exists (`dot_product` and
`embedded_gaussian` have the same tensors: it must be named), and the
direction (`"unidirectional"` for the mit-han-lab online checkpoint,
`"bidirectional"` otherwise).
"""

import dataclasses
import os
import re
import warnings

import numpy as np

from tsm_keras.data.config import IMAGENET_MEAN, IMAGENET_STD
from tsm_keras.models import mobileone
from tsm_keras.models.tsm import build_tsm
from tsm_keras.weights.checkpoint import read_checkpoint
from tsm_keras.weights.key_maps import SCHEMES, SOURCES, torchvision_head_keys
from tsm_keras.weights.torch_reader import MAX_TENSOR_ELEMENTS

# ImageNet statistics on 0..255 RGB, used by every seed row (MMAction2 configs;
# mit-han-lab's [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225] on 0..1 are the same).
IMAGENET_NORMALIZATION = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
DEFAULT_NUM_SEGMENTS = 8
# The widest feature map of the supported backbones (ResNet, MobileOne-S2..S4): a
# classifier of more classes than this allows would not fit the reader's tensor cap.
MAX_FEATURE_CHANNELS = 2048
MAX_CLASSES = MAX_TENSOR_ELEMENTS // MAX_FEATURE_CHANNELS
NON_LOCAL_HINTS = {
    "dot_product": ("dot_product", "dot-product", "dotproduct"),
    "embedded_gaussian": ("embedded_gaussian", "embedded-gaussian", "embeddedgaussian", "embedgauss"),
    "gaussian": ("gaussian", "nl-gaussian", "nonlocalgauss"),
}


class CheckpointMismatchError(ValueError):
    """Checkpoint tensors and Keras weights do not match one to one.

    Attributes:
        missing: checkpoint keys the model needs but the file lacks
            (`"key -> keras variable"`).
        unexpected: keys of the file that no Keras weight takes.
        mismatched: `"key (torch shape) -> keras variable (keras shape)"`.
    """

    def __init__(self, path, missing, unexpected, mismatched, hint=""):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        lines = [f"{path}: the checkpoint does not match the Keras model{hint}"]
        for title, items in (
            ("missing keys (needed by the model, absent from the file)", self.missing),
            ("unexpected keys (in the file, used by no Keras weight)", self.unexpected),
            ("shape mismatches (file -> Keras)", self.mismatched),
        ):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines += [f"    {item}" for item in items[:25]]
                if len(items) > 25:
                    lines.append(f"    ... and {len(items) - 25} more")
        super().__init__("\n".join(lines))


@dataclasses.dataclass
class ImportedCheckpoint:
    """The Keras model built from a checkpoint and how it was read.

    Args:
        model: the `TSM` (layout `"torch"`) with every weight from the file.
        source: `"mmaction2"`, `"mit"`, `"mit_online"` or `"torchvision"`.
        tsm_config: the architecture (`model.tsm_config()`).
        inferred: `{property: where its value came from}`.
        normalization: `{"mean", "std"}` on 0..255 RGB and `"origin"`.
        class_names: label names stored in the checkpoint, or None.
        dropped: keys dropped on purpose (`num_batches_tracked`).
        skipped: objects outside the weights replaced by inert placeholders.
        tensors_used: checkpoint tensors loaded (all of them but `dropped`).
    """

    model: object
    source: str
    tsm_config: dict
    inferred: dict
    normalization: dict
    class_names: list = None
    dropped: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    path: str = ""
    tensors_used: int = 0

    def summary(self):
        """A JSON-friendly description (written next to the model by the CLI)."""
        config = dict(self.tsm_config)
        config["input_shape"] = list(config["input_shape"])
        return {
            "checkpoint": os.path.abspath(self.path),
            "source": self.source,
            "tsm_config": config,
            "inferred": self.inferred,
            "normalization": self.normalization,
            "class_names": self.class_names,
            "tensors_used": self.tensors_used,
            "dropped_keys": len(self.dropped),
            "skipped_objects": self.skipped,
        }


# -- what the keys say ------------------------------------------------------


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


def _backbone_keys(keys, prefix):
    return [key[len(prefix) :] for key in keys if key.startswith(prefix)]


def _resnet_depth(backbone_keys):
    blocks = {
        int(match.group(1))
        for key in backbone_keys
        for match in [re.match(r"layer3\.(?:net\.)?(\d+)\.", key)]
        if match
    }
    depths = {6: 50, 23: 101}
    if len(blocks) not in depths:
        raise ValueError(
            f"ResNet with {len(blocks)} blocks in layer3: only ResNet-50 (6) and ResNet-101 "
            "(23) are supported"
        )
    return depths[len(blocks)]


def _mobileone_variant(tensors, prefix):
    """The MobileOne variant whose block widths and branches match the file."""
    for variant in mobileone.VARIANTS:
        if _mobileone_matches(variant, tensors, prefix):
            return variant
    raise ValueError("MobileOne checkpoint matches none of the variants s0..s4 (channel widths)")


def _mobileone_matches(variant, tensors, prefix):
    for setting in mobileone.block_settings(variant):
        paths = [f"{prefix}{setting.module_path}.net.", f"{prefix}{setting.module_path}."]
        for path in paths:
            reparam = tensors.get(path + "branch_reparam.weight")
            branch = tensors.get(path + "branch_conv_list.0.conv.weight")
            found = reparam if reparam is not None else branch
            if found is not None:
                break
        else:
            return False
        if found.shape[0] != setting.out_channels:
            return False
        if reparam is None:
            branches = sum(
                1 for k in range(8) if f"{path}branch_conv_list.{k}.conv.weight" in tensors
            )
            if branches != setting.num_conv_branches:
                return False
    return True


def infer_architecture(checkpoint, source, prefix):
    """What the keys and shapes of `checkpoint` determine (see module docstring)."""
    tensors = checkpoint.tensors
    keys = list(tensors)
    body = _backbone_keys(keys, prefix)
    found = {}
    if any(k.startswith("stage0.") for k in body):
        found["backbone"] = f"mobileone_{_mobileone_variant(tensors, prefix)}"
        deploy = any(".branch_reparam." in k for k in body)
        found["backbone_options"] = {"deploy": deploy}
    elif any(k.startswith(("layer7.", "features.18.", "conv2.conv.")) for k in body):
        found["backbone"] = "mobilenet_v2"
    elif any(k.startswith("layer4.") for k in body):
        found["backbone"] = f"resnet{_resnet_depth(body)}"
    else:
        raise ValueError(f"cannot tell the backbone from keys such as {sorted(body)[:6]}")
    head = classifier_path(tensors, source, prefix)
    if head is not None:
        weight = tensors.get(f"{head}.weight")
        if weight is None or len(weight.shape) != 2:
            raise ValueError(f"classifier {head}.weight not found (or not 2-D) in the checkpoint")
        if not 1 <= weight.shape[0] <= MAX_CLASSES:  # checked before a Keras head is built
            raise ValueError(
                f"classifier {head}.weight has shape {weight.shape}: expected 1 to {MAX_CLASSES} "
                "classes (rows)"
            )
        found["num_classes"] = int(weight.shape[0])
    wrappers = [k for k in body if ".net." in k or k.startswith("net.")]
    pool_wrapper = re.compile(r"^layer2\.net\.\d+\.")
    found["temporal_pool"] = any(pool_wrapper.match(k) for k in body)
    shift_wrappers = [k for k in wrappers if not pool_wrapper.match(k) or k.count(".net.") > 1]
    if source == "mit_online":
        found["shift_place"], found["shifted"] = "blockres", True
    elif found["backbone"].startswith("mobileone"):
        found["shift_place"], found["shifted"] = "block", bool(shift_wrappers)
    elif found["backbone"] == "mobilenet_v2":
        found["shift_place"], found["shifted"] = "blockres", bool(shift_wrappers)
    elif source == "torchvision":
        found["shifted"] = None
    else:
        block = re.compile(r"layer\d\.(?:net\.)?\d+\.(?:block\.)?net\.")
        blockres = re.compile(r"\.conv1\.(?:conv\.)?net\.")
        if any(block.search(k) for k in shift_wrappers):
            found["shift_place"], found["shifted"] = "block", True
        elif any(blockres.search(k) for k in shift_wrappers):
            found["shift_place"], found["shifted"] = "blockres", True
        else:
            found["shift_place"], found["shifted"] = "blockres", False
    if source == "mit" and any(re.search(r"\.nl\.", k) for k in body):
        raise ValueError(
            "mit-han-lab Non-local checkpoints (`layerX.Y.nl.*`, `layerX.Y.block.*`) are not "
            "supported; MMAction2's Non-local TSM checkpoints are"
        )
    non_local = [k for k in body if ".non_local_block." in k]
    found["has_non_local"] = bool(non_local)
    found["non_local_theta"] = any(".non_local_block.theta." in k for k in non_local)
    return found


# -- what the config text and file name say -------------------------------------


def _dict_call(text, name):
    """The text inside `name=dict(...)` (balanced parentheses), or None."""
    match = re.search(rf"\b{name}\s*=\s*dict\(", text or "")
    if not match:
        return None
    depth, start = 1, match.end()
    for position in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    return None


def _int_setting(text, name):
    match = re.search(rf"\b{name}\s*=\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def config_hints(config_text):
    """`num_segments`, `backbone_segments`, `shift_div`, `non_local` from config text."""
    hints = {}
    if not config_text:
        return hints
    backbone = _dict_call(config_text, "backbone")
    head = _dict_call(config_text, "cls_head")
    head_segments = _int_setting(head, "num_segments")
    backbone_segments = _int_setting(backbone, "num_segments")
    if head_segments or backbone_segments:
        hints["num_segments"] = head_segments or backbone_segments
    if backbone_segments:
        hints["backbone_segments"] = backbone_segments
    shift_div = _int_setting(backbone, "shift_div")
    if shift_div:
        hints["shift_div"] = shift_div
    non_local_cfg = _dict_call(backbone or "", "non_local_cfg")
    mode = re.search(r"\bmode\s*=\s*['\"](\w+)['\"]", non_local_cfg or "")
    if mode:
        hints["non_local"] = mode.group(1)
    return hints


def filename_hints(filename):
    """`num_segments`, `shift_div`, `non_local` from a model-zoo file name."""
    name = filename.lower()
    hints = {}
    match = re.search(r"1x1x(\d+)", name) or re.search(r"segment(\d+)", name)
    if match:
        hints["num_segments"] = int(match.group(1))
    match = re.search(r"_shift(\d+)", name)
    if match:
        hints["shift_div"] = int(match.group(1))
    for mode, spellings in NON_LOCAL_HINTS.items():
        if any(spelling in name for spelling in spellings):
            hints["non_local"] = mode
            break
    return hints


def _choose(name, given, hint_sources, default, inferred):
    if given is not None:
        inferred[name] = "argument"
        return given
    for origin, hints in hint_sources:
        if name in hints:
            inferred[name] = origin
            return hints[name]
    inferred[name] = "default"
    return default


# -- strict assignment ------------------------------------------------------------


def assign_weights(model, checkpoint, scheme, ignore=()):
    """Fills `model` from `checkpoint` with `scheme`, strictly (all or nothing).

    Args:
        model: a `layout="torch"` TSM.
        checkpoint: a `TorchCheckpoint`.
        scheme: a `KeyScheme`.
        ignore: file keys that are known and deliberately not imported
            (the ImageNet classifier of a torchvision backbone).

    Returns:
        The names of the Keras layers the scheme leaves at their initial
        values (classifier and Non-local blocks for ImageNet backbones).

    Raises:
        CheckpointMismatchError: listing every missing key, unexpected key and
            shape mismatch, before any weight is changed.
    """
    tensors = checkpoint.tensors
    targets = scheme.targets(model)
    keys = [target.key for target in targets]
    if len(set(keys)) != len(keys):  # pragma: no cover - a key-scheme bug
        raise RuntimeError(f"key scheme {scheme.name} maps one key to two weights")
    skipped = set(scheme.skipped_layers(model))
    targeted = {id(target.variable) for target in targets}
    unfilled = [
        variable.path
        for layer in model.layers
        if layer.name not in skipped
        for variable in layer.weights
        if id(variable) not in targeted
    ]
    if unfilled:  # pragma: no cover - a key-scheme bug
        raise RuntimeError(f"key scheme {scheme.name} leaves Keras weights unfilled: {unfilled}")
    missing, mismatched, matched = [], [], []
    for target in targets:
        tensor = tensors.get(target.key)
        if tensor is None:
            missing.append(f"{target.key} -> {target.variable.path}")
            continue
        expected = tuple(target.variable.shape)
        # The Keras shape from a stride-0 stand-in of the tensor's shape: nothing is read
        # or allocated until the shape is known to fit its variable.
        stand_in = target.convert(np.broadcast_to(np.zeros((), "float32"), tensor.shape))
        shown = "?" if stand_in is None else tuple(stand_in.shape)
        if shown != expected:
            mismatched.append(
                f"{target.key} {tensor.shape} (as Keras {shown}) -> "
                f"{target.variable.path} {expected}"
            )
            continue
        matched.append((target, tensor))
    unexpected = sorted(set(tensors) - set(keys) - set(ignore))
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(checkpoint.path, missing, unexpected, mismatched)
    values = [(target.variable, target.convert(tensor.numpy())) for target, tensor in matched]
    for variable, array in values:
        variable.assign(array.astype(variable.dtype))
    return sorted(skipped)


# -- public entry points ------------------------------------------------------------


def import_torch_checkpoint(
    path,
    source="auto",
    arch=None,
    num_segments=None,
    shift_div=None,
    non_local=None,
    direction=None,
    input_shape=(224, 224, 3),
    shift_segments=None,
    **tsm_kwargs,
):
    """Builds the Keras TSM of a PyTorch checkpoint and loads its weights.

    Args:
        path: the checkpoint (`.pth`, `.pt`, `.pth.tar`; zip or legacy format).
        source: `"auto"` or one of `"mmaction2"`, `"mit"`, `"mit_online"`
            (`"torchvision"` files are backbones: use `build_tsm(...,
            layout="torch", weights=path)`).
        arch: backbone name to insist on (`"resnet50"`, ...); checked against
            the file.
        num_segments: frames per clip `T` (default: config text, file name,
            else 8).
        shift_div: default: config text, file name, else 8.
        non_local: Non-local mode, needed when the file cannot tell
            `dot_product` from `embedded_gaussian` and nothing names it.
        direction: default `"unidirectional"` for the mit-han-lab online
            checkpoint, `"bidirectional"` otherwise.
        input_shape: `(H, W, 3)` of each frame.
        shift_segments: MobileOne only, the clip length its shifts assume
            (default: the backbone `num_segments` of the checkpoint's config
            when it differs from T, as in MMAction2's MobileOne-S4 1x1x16).
        **tsm_kwargs: further `build_tsm` arguments (`dropout`, ...).

    Returns:
        An `ImportedCheckpoint` (`.model` is the Keras model).

    Raises:
        CheckpointMismatchError, UnsafeCheckpointError, CheckpointFormatError,
        ValueError (the architecture cannot be determined).

    Example:

    >>> imported = import_torch_checkpoint("tsm_r50_1x1x8_kinetics400.pth")
    >>> imported.model.tsm_config()["backbone"], imported.source
    ('resnet50', 'mmaction2')
    """
    checkpoint = read_checkpoint(path)
    detected, prefix = infer_source(checkpoint.tensors)
    if source == "auto":
        source = detected
    elif source not in SOURCES:
        raise ValueError(f"source must be 'auto' or one of {SOURCES}, got {source!r}")
    elif source != detected:
        raise ValueError(f"{path}: looks like a {detected!r} checkpoint, not {source!r}")
    if source == "torchvision":
        raise ValueError(
            f"{path} is a torchvision ImageNet backbone without a TSM classifier; build the "
            "model and load it as backbone weights: build_tsm(backbone, num_classes, "
            "layout='torch', weights=path)"
        )
    found = infer_architecture(checkpoint, source, prefix)
    if arch is not None and arch != found["backbone"]:
        raise ValueError(f"{path}: arch={arch!r} given, but the checkpoint holds {found['backbone']!r}")
    inferred = {"source": "keys", "backbone": "keys", "num_classes": "keys"}
    hint_sources = [
        ("checkpoint config", config_hints(checkpoint.config_text)),
        ("file name", filename_hints(checkpoint.filename)),
    ]
    default_segments = 16 if found["backbone"].startswith("mobileone") else DEFAULT_NUM_SEGMENTS
    num_segments = int(_choose("num_segments", num_segments, hint_sources, default_segments, inferred))
    shift_div = int(_choose("shift_div", shift_div, hint_sources, 8, inferred))
    default_direction = "unidirectional" if source == "mit_online" else "bidirectional"
    inferred["direction"] = "argument" if direction else f"{source} default"
    direction = direction or default_direction
    mode = None
    if found["has_non_local"]:
        if not found["non_local_theta"]:
            if non_local not in (None, "gaussian"):
                raise ValueError(
                    f"{path}: non_local={non_local!r} given, but the Non-local blocks have no "
                    "theta/phi convs: they are 'gaussian'"
                )
            mode, inferred["non_local"] = "gaussian", "keys (no theta)"
        else:
            mode = _choose("non_local", non_local, hint_sources, None, inferred)
            if mode not in ("dot_product", "embedded_gaussian"):
                raise ValueError(
                    f"{path}: the Non-local blocks have theta/phi convs, so they are "
                    "'dot_product' or 'embedded_gaussian' (identical tensors) and neither the "
                    "checkpoint's config nor its file name says which; pass "
                    "non_local='dot_product' or 'embedded_gaussian'"
                    + (f" (got {mode!r})" if mode else "")
                )
    elif non_local is not None:
        raise ValueError(f"{path}: non_local={non_local!r} given, but the file has no Non-local blocks")
    backbone_options = dict(found.get("backbone_options") or {})
    backbone_segments = dict(hint_sources[0][1]).get("backbone_segments")
    if shift_segments is not None:
        if not found["backbone"].startswith("mobileone"):
            raise ValueError(f"shift_segments applies to MobileOne only, not {found['backbone']!r}")
        backbone_options["shift_segments"] = int(shift_segments)
        inferred["shift_segments"] = "argument"
    elif (
        found["backbone"].startswith("mobileone")
        and backbone_segments
        and backbone_segments != num_segments
        and num_segments % backbone_segments == 0
    ):
        # MMAction2's MobileOne 1x1x16: shifts built for 8 segments, clips of 16.
        backbone_options["shift_segments"] = backbone_segments
        inferred["shift_segments"] = "checkpoint config"
    elif found["backbone"].startswith("mobileone") and backbone_segments is None and num_segments == 16:
        warnings.warn(
            f"{path}: a MobileOne checkpoint for 16-frame clips without its training config: "
            "MMAction2's 1x1x16 model shifts each clip as two halves of 8 frames, which this file "
            "cannot tell; importing with shifts across all 16 frames. Pass shift_segments=8 "
            "(--shift-segments 8) for MMAction2's model, or shift_segments=16 to keep this one",
            stacklevel=2,
        )
    model = build_tsm(
        found["backbone"],
        num_classes=found["num_classes"],
        num_segments=num_segments,
        shift_div=shift_div,
        shift_place=found["shift_place"],
        direction=direction,
        non_local=mode,
        temporal_pool=found["temporal_pool"],
        layout="torch",
        input_shape=tuple(input_shape),
        shift=found["shifted"],
        backbone_options=backbone_options or None,
        **tsm_kwargs,
    )
    inferred.update(shift_place="keys", temporal_pool="keys", input_shape="argument")
    inferred.setdefault("non_local", "keys (none)")
    if backbone_options:
        origin = inferred.pop("shift_segments", None)
        inferred["backbone_options"] = "keys" + (f" + {origin} (shift_segments)" if origin else "")
    head = classifier_path(checkpoint.tensors, source, prefix)
    assign_weights(model, checkpoint, SCHEMES[source](prefix=prefix, head=head))
    if checkpoint.normalization:
        normalization = dict(checkpoint.normalization, origin="checkpoint data_preprocessor")
    else:
        normalization = dict(IMAGENET_NORMALIZATION, origin=f"{source} default (ImageNet)")
    return ImportedCheckpoint(
        model=model,
        source=source,
        tsm_config=model.tsm_config(),
        inferred=inferred,
        normalization=normalization,
        class_names=checkpoint.class_names,
        dropped=checkpoint.dropped,
        skipped=checkpoint.skipped,
        path=checkpoint.path,
        tensors_used=len(checkpoint.tensors),
    )


def load_torch_checkpoint(path, **kwargs):
    """The Keras TSM of a PyTorch checkpoint (see `import_torch_checkpoint`).

    Example:

    >>> model = load_torch_checkpoint("tsm_r50_1x1x8_kinetics400.pth", num_segments=8)
    >>> model.output_shape
    (None, 400)
    """
    return import_torch_checkpoint(path, **kwargs).model


def load_torch_backbone_weights(model, path, source="auto"):
    """Fills the backbone of a `layout="torch"` TSM from a PyTorch file.

    Meant for fine-tuning: torchvision ImageNet ResNet-50/101 or MobileNetV2
    files (their ImageNet classifier is not imported), or the backbone of an
    MMAction2 / mit-han-lab TSM checkpoint (its classifier is not imported).
    The TSM's classifier (and, for ImageNet files, its Non-local blocks) keep
    their initialisation; every other weight must be filled and every
    backbone tensor of the file used.

    Args:
        model: a `TSM` built with `layout="torch"`.
        path: the weight file.
        source: `"auto"` or a checkpoint family (see `key_maps.SOURCES`).

    Returns:
        `model`.

    Example:

    >>> model = build_tsm("resnet50", num_classes=174, layout="torch",
    ...                   weights="resnet50-11ad3fa6.pth")
    """
    if getattr(model, "layout", None) != "torch":
        raise ValueError("PyTorch weights need a model built with layout='torch'")
    checkpoint = read_checkpoint(path)
    detected, prefix = infer_source(checkpoint.tensors)
    source = detected if source == "auto" else source
    scheme_class = SCHEMES[source]
    if source == "torchvision":
        scheme = scheme_class(prefix=prefix)
        ignore = torchvision_head_keys(model.backbone)
    else:
        head = classifier_path(checkpoint.tensors, source, prefix)
        scheme = scheme_class(prefix=prefix, head=None)
        ignore = [key for key in checkpoint.tensors if key.startswith(head + ".")]
    assign_weights(model, checkpoint, scheme, ignore=ignore)
    return model
