"""The complete model spec of a PyTorch checkpoint, and where each value came from.

What the keys tell (each backbone module recognises its own keys and reads
its own wrappers, see `BackboneSpec.recognizes` / `read_structure`):

| property       | from                                                              |
|----------------|-------------------------------------------------------------------|
| source         | `backbone.`/`cls_head.` (MMAction2), `base_model.` (mit-han-lab), bare `features.` + `classifier.weight` (mit-han-lab online), `fc.`/`classifier.1.` (torchvision) |
| backbone       | ResNet: `layer4` (depth from the blocks of `layer3`, block type from `conv3`); MobileNetV2: `layer7`/`features.18`; MobileOne: `stage0` (variant from the channel widths) |
| num_classes    | the classifier's weight shape                                     |
| shift          | `.net` wrappers: `conv1[.conv].net` = `blockres`, `layerX.Y.net` = `block`, none = TSN (no shift) |
| non_local      | `non_local_block` keys; without `theta` it is `gaussian`           |
| temporal_pool  | `layer2.net.` (the `TemporalPool` wrapper)                        |
| MobileOne deploy | `branch_reparam` keys                                           |

What they cannot tell comes from the caller, else from the training config
text stored in `meta` (read with regular expressions, never executed), else
from the file name (`1x1x16`, `segment8`, `shift8`, `nl-dot-product`), else
from the defaults: `num_segments` (the backbone's `default_num_segments`: 8,
MobileOne 16), `shift_div` (8), the Non-local mode when `theta` exists
(`dot_product` and `embedded_gaussian` have the same tensors: it must be
named), and the direction (`"unidirectional"` for the mit-han-lab online
checkpoint, `"bidirectional"` otherwise).
"""

import dataclasses
import functools
import re
import warnings

from tsm_keras.convert.hints import config_hints, filename_hints
from tsm_keras.models.backbones import BACKBONES
from tsm_keras.models.spec import TSMSpec
from tsm_keras.weights import classifier_path
from tsm_keras.weights.torch_reader import MAX_TENSOR_ELEMENTS

DEFAULT_SHIFT_DIV = 8
# The widest feature map of the supported backbones (ResNet, MobileOne-S2..S4): a
# classifier of more classes than this allows would not fit the reader's tensor cap.
MAX_FEATURE_CHANNELS = 2048
MAX_CLASSES = MAX_TENSOR_ELEMENTS // MAX_FEATURE_CHANNELS


@dataclasses.dataclass(frozen=True)
class ResolvedSpec:
    """The model a checkpoint holds, with the provenance of every value.

    Args:
        spec: the `TSMSpec` (layout `"torch"`) of the checkpoint's model.
        origins: `{field: origin}` for `source` and the fields the file or
            the caller decides, origin one of `"argument"`,
            `"checkpoint config"`, `"file name"`, `"keys"` (or `"keys (...)"`),
            `"default"`, `"<source> default"`.
    """

    spec: TSMSpec
    origins: dict


def backbone_tensors(tensors, prefix):
    """`{key without prefix: tensor}` of the keys under the family's backbone prefix."""
    return {key[len(prefix) :]: tensor for key, tensor in tensors.items() if key.startswith(prefix)}


def recognize_backbone(body):
    """The one registered `BackboneSpec` whose checkpoint keys `body` are."""
    matches = [spec for spec in BACKBONES.values() if spec.recognizes(body)]
    if not matches:
        raise ValueError(
            f"cannot tell the backbone from keys such as {sorted(body)[:6]}: none of the "
            f"registered backbones ({', '.join(sorted(BACKBONES))}) recognises them"
        )
    if len(matches) > 1:  # pragma: no cover - two backbones claim the same keys
        raise RuntimeError(f"keys match several backbones: {[spec.name for spec in matches]}")
    return matches[0]


def read_architecture(checkpoint, source, prefix):
    """What the keys and shapes of `checkpoint` determine (see the module docstring).

    Returns:
        dict with `backbone` (a `BackboneSpec`), `shift_place`, `shifted`,
        `temporal_pool`, `backbone_options`, `num_classes`, `has_non_local`,
        `non_local_theta`.
    """
    tensors = checkpoint.tensors
    body = backbone_tensors(tensors, prefix)
    if source == "mit" and any(re.search(r"\.nl\.", key) for key in body):
        raise ValueError(
            "mit-han-lab Non-local checkpoints (`layerX.Y.nl.*`, `layerX.Y.block.*`) are not "
            "supported; MMAction2's Non-local TSM checkpoints are"
        )
    spec = recognize_backbone(body)
    found = {"backbone": spec, **spec.read_structure(body)}
    if source == "mit_online":  # shift buffers instead of wrappers: always blockres
        found["shift_place"], found["shifted"] = "blockres", True
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
    non_local = [key for key in body if ".non_local_block." in key]
    found["has_non_local"] = bool(non_local)
    found["non_local_theta"] = any(".non_local_block.theta." in key for key in non_local)
    return found


def _choose(name, given, default, hint_sources, origins):
    """`given`, else the first hint naming `name`, else `default`; records the origin."""
    if given is not None:
        origins[name] = "argument"
        return given
    for origin, hints in hint_sources:
        if name in hints:
            origins[name] = origin
            return hints[name]
    origins[name] = "default"
    return default


def _resolve_non_local(path, found, given, choose, origins):
    """The Non-local mode: `gaussian` without theta, else named by the caller or hints."""
    if not found["has_non_local"]:
        if given is not None:
            raise ValueError(
                f"{path}: non_local={given!r} given, but the file has no Non-local blocks"
            )
        origins["non_local"] = "keys (none)"
        return None
    if not found["non_local_theta"]:
        if given not in (None, "gaussian"):
            raise ValueError(
                f"{path}: non_local={given!r} given, but the Non-local blocks have no "
                "theta/phi convs: they are 'gaussian'"
            )
        origins["non_local"] = "keys (no theta)"
        return "gaussian"
    mode = choose("non_local", given, None)
    if mode not in ("dot_product", "embedded_gaussian"):
        raise ValueError(
            f"{path}: the Non-local blocks have theta/phi convs, so they are "
            "'dot_product' or 'embedded_gaussian' (identical tensors) and neither the "
            "checkpoint's config nor its file name says which; pass "
            "non_local='dot_product' or 'embedded_gaussian'"
            + (f" (got {mode!r})" if mode else "")
        )
    return mode


def _resolve_backbone_options(
    path, spec, found, shift_segments, config_segments, num_segments, origins
):
    """The keys' backbone options, plus `shift_segments` from the caller or the stored config."""
    options = dict(found["backbone_options"])
    origin = None
    if shift_segments is not None:
        if "shift_segments" not in spec.options:
            raise ValueError(
                f"shift_segments is not an option of backbone {spec.name!r} "
                f"(its options: {list(spec.options)})"
            )
        options["shift_segments"], origin = int(shift_segments), "argument"
    elif (
        "shift_segments" in spec.options
        and config_segments
        and config_segments != num_segments
        and num_segments % config_segments == 0
    ):
        # MMAction2's MobileOne 1x1x16: shifts built for 8 segments, clips of 16.
        options["shift_segments"], origin = config_segments, "checkpoint config"
    elif "shift_segments" in spec.options and config_segments is None and num_segments == 16:
        warnings.warn(
            f"{path}: a MobileOne checkpoint for 16-frame clips without its training config: "
            "MMAction2's 1x1x16 model shifts each clip as two halves of 8 frames, which this file "
            "cannot tell; importing with shifts across all 16 frames. Pass shift_segments=8 "
            "(--shift-segments 8) for MMAction2's model, or shift_segments=16 to keep this one",
            stacklevel=4,  # the caller of import_torch_checkpoint
        )
    if options:
        origins["backbone_options"] = "keys" + (f" + {origin} (shift_segments)" if origin else "")
    return options


def resolve_spec(
    checkpoint,
    source,
    prefix,
    arch=None,
    num_segments=None,
    shift_div=None,
    non_local=None,
    direction=None,
    input_shape=(224, 224, 3),
    shift_segments=None,
    **spec_fields,
):
    """The complete `TSMSpec` of `checkpoint`, with the origin of each value.

    Args:
        checkpoint: a `tsm_keras.weights.TorchCheckpoint`.
        source: its family (`"mmaction2"`, `"mit"`, `"mit_online"`).
        prefix: the family's backbone key prefix in this file.
        arch, num_segments, shift_div, non_local, direction, input_shape,
        shift_segments: the caller's values, None when not given (see
            `tsm_keras.convert.import_torch_checkpoint`).
        **spec_fields: further `TSMSpec` fields the file does not hold
            (`dropout`, `bn_momentum`, `init_std`); origin `"argument"`.

    Returns:
        A `ResolvedSpec`.

    Raises:
        ValueError: the file contradicts an argument or leaves a value open;
            `tsm_keras.utils.config.ConfigError` (a `ValueError`) for a value
            the spec refuses, naming the field (`model.direction: ...`).
    """
    path = checkpoint.path
    found = read_architecture(checkpoint, source, prefix)
    spec = found["backbone"]
    if arch is not None and arch != spec.name:
        raise ValueError(f"{path}: arch={arch!r} given, but the checkpoint holds {spec.name!r}")
    origins = {"source": "keys", "backbone": "keys", "num_classes": "keys"}
    stored_config = config_hints(checkpoint.config_text)
    hint_sources = [
        ("checkpoint config", stored_config),
        ("file name", filename_hints(checkpoint.filename)),
    ]
    choose = functools.partial(_choose, hint_sources=hint_sources, origins=origins)
    num_segments = int(choose("num_segments", num_segments, spec.default_num_segments))
    shift_div = int(choose("shift_div", shift_div, DEFAULT_SHIFT_DIV))
    origins["direction"] = "argument" if direction else f"{source} default"
    direction = direction or ("unidirectional" if source == "mit_online" else "bidirectional")
    mode = _resolve_non_local(path, found, non_local, choose, origins)
    options = _resolve_backbone_options(
        path, spec, found, shift_segments, stored_config.get("backbone_segments"), num_segments, origins
    )
    origins.update(shift_place="keys", temporal_pool="keys", input_shape="argument")
    decided = {
        "backbone": spec.name,
        "num_classes": found["num_classes"],
        "num_segments": num_segments,
        "shift_div": shift_div if found["shifted"] else 0,
        "shift_place": found["shift_place"],
        "direction": direction,
        "non_local": mode,
        "temporal_pool": found["temporal_pool"],
        "layout": "torch",
        "input_shape": tuple(input_shape),
        "backbone_options": options,
    }
    origins.update(dict.fromkeys(spec_fields, "argument"))
    return ResolvedSpec(spec=_model_spec(path, decided, spec_fields), origins=origins)


def _model_spec(path, decided, spec_fields):
    """The validated `TSMSpec` of the decided fields plus the caller's further fields."""
    overlap = sorted(set(decided) & set(spec_fields))
    if overlap:
        raise ValueError(
            f"{path}: {', '.join(overlap)} cannot be given as further spec fields: the checkpoint, "
            "the import arguments or the torch layout decide them"
        )
    return TSMSpec.from_dict({**decided, **spec_fields})
