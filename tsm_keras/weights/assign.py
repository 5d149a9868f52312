"""Strict assignment of checkpoint tensors to Keras weights: all or nothing."""

import numpy as np

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


def assign_weights(model, checkpoint, scheme, backbone, ignore=()):
    """Fills `model` from `checkpoint` with `scheme`, strictly (all or nothing).

    Args:
        model: a `layout="torch"` TSM.
        checkpoint: a `TorchCheckpoint`.
        scheme: a `KeyScheme`.
        backbone: the model's `BackboneSpec` (its key paths).
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
    targets = scheme.targets(model, backbone)
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
