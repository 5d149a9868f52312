"""A PyTorch checkpoint file split into its weights and what travels with them.

Real checkpoints are more than a state dict. MMAction2 ones are
`{"state_dict": ..., "meta": {...config text, versions, numpy scalars...}}`,
unpublished mmengine ones add `message_hub`, `optimizer`,
`param_schedulers`; mit-han-lab ones `{"epoch", "arch", "state_dict",
"best_prec1"}`; the mit-han-lab online and torchvision files are bare state
dicts. `read_checkpoint` finds the weights, checks that every one of them is
a tensor (a pickled object among the weights is refused: it was not run, but
it has no business there), and keeps from the rest only plain data:

- `normalization`: `data_preprocessor.mean` / `.std` when the weights carry
  them (they are taken out of the weights, not imported as layers);
- `config_text`: the training config text of `meta` (read with regular
  expressions for hints such as `num_segments`, never executed);
- `class_names`: `meta["dataset_meta"]["classes"]` when present;
- `skipped`: the classes of the objects outside the weights that were
  replaced by inert placeholders (never constructed).

`num_batches_tracked` (the BatchNorm step counter) is the one tensor that is
legitimately dropped: Keras BatchNormalization has no such variable, and it
does not influence inference.
"""

import dataclasses
import os

import numpy as np

from tsm_keras.weights.torch_reader import (
    InertObject,
    TorchTensor,
    inert_name,
    is_inert,
    read_torch_file,
)

DROPPED_SUFFIX = "num_batches_tracked"
NORMALIZATION_KEYS = {"mean": "data_preprocessor.mean", "std": "data_preprocessor.std"}
WEIGHT_CONTAINERS = ("state_dict", "model", "model_state_dict")


class UnsafeCheckpointError(ValueError):
    """The weights of a checkpoint hold something other than tensors."""


@dataclasses.dataclass
class TorchCheckpoint:
    """The weights of a checkpoint and the plain data found next to them.

    Args:
        path: the file.
        tensors: `{key: TorchTensor}`, the weights to import.
        dropped: keys removed on purpose (`num_batches_tracked`).
        normalization: `{"mean": [...], "std": [...]}` from the weights, or None.
        config_text: training config text from `meta`, or None.
        class_names: label names from `meta`, or None.
        skipped: `"location: class"` of objects replaced by inert placeholders.
        top_level_keys: the keys of the saved dict (empty for bare state dicts).
    """

    path: str
    tensors: dict
    dropped: list = dataclasses.field(default_factory=list)
    normalization: dict = None
    config_text: str = None
    class_names: list = None
    skipped: list = dataclasses.field(default_factory=list)
    top_level_keys: list = dataclasses.field(default_factory=list)
    arch_hint: str = None

    @property
    def filename(self):
        return os.path.basename(self.path)


def _is_weight_dict(value):
    return isinstance(value, dict) and value and all(isinstance(k, str) for k in value)


def _find_weights(saved, path):
    """`(weights dict, its location, the other top-level entries)`."""
    if not isinstance(saved, dict):
        raise UnsafeCheckpointError(
            f"{path}: expected a dict of tensors or a dict with 'state_dict', got a pickled "
            f"{inert_name(saved)} (not executed)"
        )
    for name in WEIGHT_CONTAINERS:
        if _is_weight_dict(saved.get(name)):
            others = {key: value for key, value in saved.items() if key != name}
            return saved[name], f"['{name}']", others
    if any(isinstance(value, TorchTensor) for value in saved.values()):
        return saved, "", {}
    raise UnsafeCheckpointError(
        f"{path}: no weights found: expected a state dict or one of the entries "
        f"{list(WEIGHT_CONTAINERS)}, got keys {sorted(map(str, saved))[:20]}"
    )


def _inert_objects(value, location, found, depth=0):
    """Collects `location: class` of inert placeholders (bounded walk)."""
    if depth > 8 or len(found) > 200:
        return
    if is_inert(value):
        found.append(f"{location}: {inert_name(value)}")
        if isinstance(value, InertObject):
            for index, arg in enumerate(value.args):
                _inert_objects(arg, f"{location}.args[{index}]", found, depth + 1)
            _inert_objects(value.state, f"{location}.state", found, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _inert_objects(item, f"{location}[{key!r}]", found, depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _inert_objects(item, f"{location}[{index}]", found, depth + 1)


def _strings(value, depth=0):
    """Every plain string inside nested dicts / lists."""
    if depth > 6:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def _config_text(meta):
    if not isinstance(meta, dict):
        return None
    for key in ("cfg", "config"):
        if isinstance(meta.get(key), str):
            return meta[key]
    candidates = [text for text in _strings(meta) if "backbone" in text and "dict(" in text]
    return max(candidates, key=len) if candidates else None


def _class_names(meta):
    if not isinstance(meta, dict):
        return None
    dataset_meta = meta.get("dataset_meta")
    names = dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None
    names = names if names is not None else meta.get("CLASSES")
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _normalization(tensors, path):
    found = {}
    for name, key in NORMALIZATION_KEYS.items():
        if key in tensors:
            values = tensors.pop(key).numpy().astype("float64").reshape(-1)
            found[name] = [float(v) for v in values]
    if not found:
        return None
    if set(found) != set(NORMALIZATION_KEYS) or len(found["mean"]) != len(found["std"]):
        raise UnsafeCheckpointError(
            f"{path}: data_preprocessor holds {sorted(found)} with lengths "
            f"{[len(v) for v in found.values()]}; expected both mean and std of equal length"
        )
    if not np.all(np.asarray(found["std"]) > 0):
        raise UnsafeCheckpointError(f"{path}: data_preprocessor.std must be positive, got {found['std']}")
    return found


def read_checkpoint(path):
    """Reads a `torch.save` file into a `TorchCheckpoint`, executing nothing.

    Args:
        path: a `.pth` / `.pt` / `.pth.tar` file.

    Returns:
        A `TorchCheckpoint`.

    Raises:
        UnsafeCheckpointError: an entry of the weights is not a tensor (e.g.
            a pickled object; it was NOT constructed), or no weights found.
        CheckpointFormatError: not a PyTorch checkpoint.

    Example:

    >>> checkpoint = read_checkpoint("tsm_r50_kinetics400.pth")
    >>> checkpoint.tensors["cls_head.fc_cls.weight"].shape
    (400, 2048)
    """
    path = os.fspath(path)
    saved = read_torch_file(path)
    weights, location, others = _find_weights(saved, path)
    tensors, dropped = {}, []
    for key, value in weights.items():
        if not isinstance(value, TorchTensor):
            what = (
                f"a pickled {inert_name(value)} object (it was NOT executed)"
                if is_inert(value)
                else f"a {type(value).__name__}"
            )
            raise UnsafeCheckpointError(
                f"{path}: weights{location}[{key!r}] is {what}, not a tensor; refusing to "
                "import a checkpoint whose weights contain pickled objects"
            )
        if key.endswith(DROPPED_SUFFIX):
            dropped.append(key)
            continue
        tensors[key] = value
    skipped = []
    for key, value in others.items():
        _inert_objects(value, f"[{key!r}]", skipped)
    meta = others.get("meta")
    arch = others.get("arch")
    return TorchCheckpoint(
        path=path,
        tensors=tensors,
        dropped=dropped,
        normalization=_normalization(tensors, path),
        config_text=_config_text(meta),
        class_names=_class_names(meta),
        skipped=skipped,
        top_level_keys=[str(key) for key in others] if others else [],
        arch_hint=arch if isinstance(arch, str) else None,
    )
