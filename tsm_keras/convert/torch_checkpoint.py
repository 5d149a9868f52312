"""PyTorch TSM checkpoints (MMAction2, mit-han-lab) -> Keras TSM models.

`import_torch_checkpoint(path)` reads a checkpoint without executing it
(`tsm_keras.weights.checkpoint`), resolves the complete model spec with the
origin of every value (`tsm_keras.convert.resolve`), builds the matching
`layout="torch"` TSM and fills every weight, strictly: each tensor of the
file is used once and each Keras weight is filled once, or nothing is loaded
and `CheckpointMismatchError` lists the missing keys, the unexpected keys
and the shape mismatches (key and Keras variable on both sides).
"""

import dataclasses
import os

from tsm_keras.convert.resolve import resolve_spec
from tsm_keras.data.config import IMAGENET_MEAN, IMAGENET_STD
from tsm_keras.models.backbones import get_backbone
from tsm_keras.models.spec import TSMSpec
from tsm_keras.models.tsm import TSM
from tsm_keras.weights import (
    SCHEMES,
    SOURCES,
    assign_weights,
    classifier_path,
    infer_source,
    read_checkpoint,
)

# ImageNet statistics on 0..255 RGB, used by every seed row (MMAction2 configs;
# mit-han-lab's [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225] on 0..1 are the same).
IMAGENET_NORMALIZATION = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


@dataclasses.dataclass
class ImportedCheckpoint:
    """The Keras model built from a checkpoint and how it was read.

    Args:
        model: the `TSM` (layout `"torch"`) with every weight from the file.
        source: `"mmaction2"`, `"mit"`, `"mit_online"` or `"torchvision"`.
        spec: the architecture, a `TSMSpec` (`model.spec`).
        inferred: `{property: where its value came from}`.
        normalization: `{"mean", "std"}` on 0..255 RGB and `"origin"`.
        class_names: label names stored in the checkpoint, or None.
        dropped: keys dropped on purpose (`num_batches_tracked`).
        skipped: objects outside the weights replaced by inert placeholders.
        tensors_used: checkpoint tensors loaded (all of them but `dropped`).
    """

    model: object
    source: str
    spec: TSMSpec
    inferred: dict
    normalization: dict
    class_names: list = None
    dropped: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    path: str = ""
    tensors_used: int = 0

    def summary(self):
        """A JSON-friendly description (written next to the model by the CLI)."""
        return {
            "checkpoint": os.path.abspath(self.path),
            "source": self.source,
            "tsm_config": self.spec.to_dict(),
            "inferred": self.inferred,
            "normalization": self.normalization,
            "class_names": self.class_names,
            "tensors_used": self.tensors_used,
            "dropped_keys": len(self.dropped),
            "skipped_objects": self.skipped,
        }


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
    **spec_fields,
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
        **spec_fields: further `TSMSpec` fields the file does not hold
            (`dropout`, `bn_momentum`, `init_std`).

    Returns:
        An `ImportedCheckpoint` (`.model` is the Keras model).

    Raises:
        CheckpointMismatchError, UnsafeCheckpointError, CheckpointFormatError,
        ValueError (the architecture cannot be determined; a
        `tsm_keras.utils.config.ConfigError` names a field the spec refuses).

    Example:

    >>> imported = import_torch_checkpoint("tsm_r50_1x1x8_kinetics400.pth")
    >>> imported.model.tsm_config()["backbone"], imported.source
    ('resnet50', 'mmaction2')
    """
    checkpoint = read_checkpoint(path)
    source, prefix = check_source(checkpoint, source)
    resolved = resolve_spec(
        checkpoint,
        source,
        prefix,
        arch=arch,
        num_segments=num_segments,
        shift_div=shift_div,
        non_local=non_local,
        direction=direction,
        input_shape=input_shape,
        shift_segments=shift_segments,
        **spec_fields,
    )
    model = TSM(resolved.spec)
    head = classifier_path(checkpoint.tensors, source, prefix)
    scheme = SCHEMES[source](prefix=prefix, head=head)
    assign_weights(model, checkpoint, scheme, get_backbone(model.backbone))
    return ImportedCheckpoint(
        model=model,
        source=source,
        spec=model.spec,
        inferred=resolved.origins,
        normalization=normalization(checkpoint, source),
        class_names=checkpoint.class_names,
        dropped=checkpoint.dropped,
        skipped=checkpoint.skipped,
        path=checkpoint.path,
        tensors_used=len(checkpoint.tensors),
    )


def check_source(checkpoint, source):
    """`(source, prefix)`: the family the keys show, checked against `source`."""
    path = checkpoint.path
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
    return source, prefix


def normalization(checkpoint, source):
    """Input mean/std on 0..255 RGB: the checkpoint's data preprocessor, else ImageNet's."""
    if checkpoint.normalization:
        return dict(checkpoint.normalization, origin="checkpoint data_preprocessor")
    return dict(IMAGENET_NORMALIZATION, origin=f"{source} default (ImageNet)")


def load_torch_checkpoint(path, **kwargs):
    """The Keras TSM of a PyTorch checkpoint (see `import_torch_checkpoint`).

    Example:

    >>> model = load_torch_checkpoint("tsm_r50_1x1x8_kinetics400.pth", num_segments=8)
    >>> model.output_shape
    (None, 400)
    """
    return import_torch_checkpoint(path, **kwargs).model
