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
import itertools
import os

import numpy as np

from tsm_keras.weights.torch_reader import (
    CheckpointFormatError,
    InertObject,
    TorchTensor,
    describe,
    inert_name,
    is_inert,
    read_torch_file,
    unreadable,
)

DROPPED_SUFFIX = "num_batches_tracked"
NORMALIZATION_KEYS = {"mean": "data_preprocessor.mean", "std": "data_preprocessor.std"}
WEIGHT_CONTAINERS = ("state_dict", "model", "model_state_dict")
MAX_NORMALIZATION_VALUES = 16  # one mean / std per channel
MAX_WALK_NODES = 100_000
MAX_WALK_DEPTH = 12


class UnsafeCheckpointError(CheckpointFormatError):
    """The weights of a checkpoint hold something other than tensors.

    A `CheckpointFormatError`, so that one `except` covers every file the
    reader refuses.
    """


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
        f"{list(WEIGHT_CONTAINERS)}, got keys {sorted(describe(key) for key in saved)[:20]}"
    )


def _walk(value, location, into_inert=True):
    """`(location, node)` for the nodes under `value`, bounded whatever the graph.

    Each container is visited once (memoised by identity: a list graph with
    shared references, 60 wide and 9 deep, is 9 lists, not 60^9 paths), at
    most `MAX_WALK_DEPTH` deep and `MAX_WALK_NODES` in all.
    """
    seen = set()
    pending = [(location, value, 0)]
    visited = 0
    while pending and visited < MAX_WALK_NODES:
        location, value, depth = pending.pop()
        if isinstance(value, (dict, list, tuple, set, frozenset, InertObject)):
            if id(value) in seen:
                continue
            seen.add(id(value))
        visited += 1
        yield location, value
        if depth >= MAX_WALK_DEPTH:
            continue
        if isinstance(value, dict):
            children = ((f"{location}[{describe(key)}]", item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            children = ((f"{location}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, InertObject) and into_inert:
            children = [(f"{location}.args[{index}]", arg) for index, arg in enumerate(value.args)]
            children.append((f"{location}.state", value.state))
        else:
            continue
        children = list(itertools.islice(children, MAX_WALK_NODES))
        pending.extend((where, item, depth + 1) for where, item in reversed(children))


def _inert_objects(value, location, found):
    """Collects `location: class` of inert placeholders (at most 200)."""
    for where, item in _walk(value, location):
        if len(found) >= 200:
            return
        if is_inert(item):
            found.append(f"{where}: {inert_name(item)}")


def _strings(value):
    """The plain strings inside nested dicts / lists."""
    for _, item in _walk(value, "", into_inert=False):
        if isinstance(item, str):
            yield item


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
            tensor = tensors.pop(key)
            if tensor.size > MAX_NORMALIZATION_VALUES:  # checked before anything is read
                raise UnsafeCheckpointError(
                    f"{path}: {key} has shape {tensor.shape}; expected one value per channel"
                )
            values = tensor.numpy().astype("float64").reshape(-1)
            if not np.all(np.isfinite(values)):
                raise UnsafeCheckpointError(f"{path}: {key} holds non-finite values {values.tolist()}")
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
    try:
        return _split_checkpoint(path, saved)
    except CheckpointFormatError:
        raise
    except Exception as error:  # whatever else a hostile file provokes is a format error
        raise unreadable(path, error) from None


def _split_checkpoint(path, saved):
    """`read_checkpoint` on the unpickled object `saved`."""
    weights, location, others = _find_weights(saved, path)
    tensors, dropped = {}, []
    for key, value in weights.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{path}: weights{location} has the key {describe(key)}, not a name")
        if not isinstance(value, TorchTensor):
            what = (
                f"a pickled {inert_name(value)} object (it was NOT executed)"
                if is_inert(value)
                else f"a {type(value).__name__}"
            )
            raise UnsafeCheckpointError(
                f"{path}: weights{location}[{describe(key)}] is {what}, not a tensor; refusing to "
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
