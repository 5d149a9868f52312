"""A reader of PyTorch checkpoint files that never executes code from them.

`torch.save` writes a pickle in which tensors point at raw storages (in a zip
archive since PyTorch 1.6, appended after the pickle in the older "legacy"
format). Unpickling a file normally imports and calls whatever the file
names, which is how a malicious checkpoint runs code. This reader unpickles
with a restricted `find_class`:

- the few callables a state dict needs are replaced by our own functions:
  `torch._utils._rebuild_tensor_v2` (and its parameter / legacy variants)
  builds a `TorchTensor` (shape, dtype, numpy view of the storage),
  `collections.OrderedDict` is the real class, the `torch.*Storage` classes
  are dtype tags;
- every other global (mmengine's `HistoryBuffer`, `numpy` scalars in
  `meta`, `os.system`, ...) becomes an `InertObject` subclass that records its
  arguments and does nothing else, so files that carry training state next
  to the weights still load, and nothing in them ever runs.

Whether an inert object is acceptable is decided by the caller: outside the
weights it is skipped, inside the weights the import is refused
(`tsm_keras.weights.checkpoint`).

PyTorch itself is not needed. `torch.load(weights_only=True)` would be safe
as well, but it refuses the whole file as soon as one non-allowlisted class
appears anywhere (as in every mmengine checkpoint that still has its
`message_hub`), and it would make torch a hard dependency of the import.
"""

import dataclasses
import io
import os
import pickle
import struct
import weakref
import zipfile

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
MAX_TENSOR_ELEMENTS = 2**31  # refuse views that would copy more (e.g. hostile stride-0 shapes)


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with TensorFlow
        return None
    return np.dtype(ml_dtypes.bfloat16)


# `torch.<Name>Storage` -> numpy dtype of its elements.
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("float64"),
    "FloatStorage": np.dtype("float32"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": _bfloat16(),
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
    "UntypedStorage": np.dtype("uint8"),
}


class InertObject:
    """What a pickled object of a class we do not trust becomes.

    Subclasses are created per pickled global (`module`, `name` class
    attributes). Calling, constructing, `__setstate__`, item assignment and
    `append` only record their arguments.
    """

    module = "?"
    name = "?"

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.args = args
        instance.kwargs = kwargs
        instance.state = None
        instance.items = []
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    @classmethod
    def qualified_name(cls):
        return f"{cls.module}.{cls.name}"

    def __repr__(self):
        return f"<inert {self.qualified_name()}>"


def is_inert(value):
    """True for an `InertObject` instance or class."""
    return isinstance(value, InertObject) or (
        isinstance(value, type) and issubclass(value, InertObject)
    )


def inert_name(value):
    return value.qualified_name() if is_inert(value) else type(value).__name__


@dataclasses.dataclass(frozen=True)
class StorageTag:
    """Stands for a `torch.<Name>Storage` class: only its element dtype."""

    name: str

    @property
    def dtype(self):
        dtype = STORAGE_DTYPES.get(self.name)
        if dtype is None:
            raise CheckpointFormatError(f"storages of type torch.{self.name} are not supported")
        return dtype


class Storage:
    """A flat typed buffer, filled when the bytes become available."""

    def __init__(self, dtype, numel, loader=None):
        self.dtype = dtype
        self.numel = int(numel)
        self._loader = loader
        self._array = None

    def set_bytes(self, data, byteorder="little"):
        dtype = self.dtype.newbyteorder("<" if byteorder == "little" else ">")
        if self.dtype.kind == "V" or self.dtype.itemsize == 1:  # bfloat16, bytes, bool
            dtype = self.dtype
        array = np.frombuffer(data, dtype=dtype, count=self.numel)
        self._array = array.astype(self.dtype.newbyteorder("="), copy=False)

    def array(self):
        if self._array is None:
            if self._loader is None:
                raise CheckpointFormatError("tensor data is missing from the checkpoint")
            self._loader(self)
        return self._array


class StorageView:
    """A legacy-format storage that is a slice of another one."""

    def __init__(self, base, offset, numel):
        self.base = base
        self.offset = int(offset)
        self.numel = int(numel)
        self.dtype = base.dtype

    def array(self):
        return self.base.array()[self.offset : self.offset + self.numel]


class TorchTensor:
    """A tensor of the checkpoint: shape and dtype now, values on `numpy()`.

    Values are read from the storage only when asked for, so optimizer
    states and other unused tensors of a zip checkpoint are never loaded.
    """

    def __init__(self, storage, storage_offset, size, stride):
        self.storage = storage
        self.storage_offset = int(storage_offset)
        self.shape = tuple(int(dim) for dim in size)
        self.stride = tuple(int(step) for step in stride)
        if len(self.shape) != len(self.stride) or min(self.shape, default=0) < 0:
            raise CheckpointFormatError(f"bad tensor geometry size={size} stride={stride}")
        if int(np.prod(self.shape, dtype=np.float64)) > MAX_TENSOR_ELEMENTS:
            raise CheckpointFormatError(f"tensor of shape {self.shape} is too large to import")

    @property
    def dtype(self):
        return self.storage.dtype

    def numpy(self):
        """The values as a new C-contiguous numpy array."""
        flat = self.storage.array()
        if 0 in self.shape:
            return np.zeros(self.shape, flat.dtype)
        last = self.storage_offset + sum(
            (dim - 1) * step for dim, step in zip(self.shape, self.stride)
        )
        if self.storage_offset < 0 or min(self.stride, default=0) < 0 or last >= flat.size:
            raise CheckpointFormatError(
                f"tensor of shape {self.shape} reaches past its storage of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.storage_offset :],
            shape=self.shape,
            strides=tuple(step * flat.itemsize for step in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)

    def __repr__(self):
        return f"TorchTensor(shape={self.shape}, dtype={self.dtype})"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *unused):
    return TorchTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return TorchTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


def _rebuild_from_type_v2(function, new_type, args, state):
    if function not in _REBUILD_FUNCTIONS:
        return _inert_class("torch._tensor", "_rebuild_from_type_v2")(function, new_type, args, state)
    return function(*args)


_REBUILD_FUNCTIONS = (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter)


def _codecs_encode(text, encoding="utf-8", *unused):
    """`_codecs.encode`, which protocol-2 pickles use for `bytes`; latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        return _inert_class("_codecs", "encode")(text, encoding)
    return text.encode("latin1")


def _reconstructor(cls, base, state=None):
    """`copyreg._reconstructor` for inert classes only (protocol < 2 objects)."""
    if isinstance(cls, type) and issubclass(cls, InertObject):
        return cls(state)
    return _inert_class("copyreg", "_reconstructor")(cls, base, state)


_TENSOR_MARKER = type("TorchTensorClass", (), {})

SAFE_GLOBALS = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TENSOR_MARKER,
    ("torch.nn.parameter", "Parameter"): _TENSOR_MARKER,
}
for _name in STORAGE_DTYPES:
    SAFE_GLOBALS[("torch", _name)] = StorageTag(_name)

_INERT_CLASSES = {}


def _inert_class(module, name):
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(
            f"Inert[{module}.{name}]", (InertObject,), {"module": module, "name": name}
        )
    return _INERT_CLASSES[key]


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `SAFE_GLOBALS`; the rest is inert.

    Args:
        file: binary file object positioned at a pickle.
        persistent_load: function for torch's storage references.
    """

    def __init__(self, file, persistent_load):
        super().__init__(file, encoding="latin1")
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        return _inert_class(module, name)

    def persistent_load(self, saved_id):
        return self._persistent_load(saved_id)


def _storage_tag(value):
    if isinstance(value, StorageTag):
        return value
    if isinstance(value, str):  # some writers store the type name
        return StorageTag(value.rsplit(".", 1)[-1])
    raise CheckpointFormatError(f"unexpected storage type {inert_name(value)} in checkpoint")


class _ZipSource:
    """Reads storage records of one zip checkpoint; closes with its storages."""

    def __init__(self, path):
        self.path = path
        self.archive = zipfile.ZipFile(path)
        self.names = set(self.archive.namelist())
        weakref.finalize(self, self.archive.close)


def _load_zip(path):
    source = _ZipSource(path)
    pickles = [n for n in source.names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        raise CheckpointFormatError(f"{path}: zip file without a '<archive>/data.pkl' record")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in source.names:
        byteorder = source.archive.read(prefix + "byteorder").decode("ascii").strip()
    storages = {}

    def persistent_load(saved_id):
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise CheckpointFormatError(f"{path}: unsupported persistent id {saved_id!r}")
        storage_type, key, _location, numel = saved_id[1:5]
        key = str(key)
        if key not in storages:
            dtype = _storage_tag(storage_type).dtype
            record = f"{prefix}data/{key}"
            if record not in source.names:
                raise CheckpointFormatError(f"{path}: record {record!r} is missing")
            if int(numel) * dtype.itemsize > source.archive.getinfo(record).file_size:
                raise CheckpointFormatError(f"{path}: record {record!r} is truncated")

            def load(storage, record=record):
                storage.set_bytes(source.archive.read(record), byteorder)

            storages[key] = Storage(dtype, numel, loader=load)
        return storages[key]

    data = source.archive.read(pickles[0])
    return _unpickle(RestrictedUnpickler(io.BytesIO(data), persistent_load), path)


def _unpickle(unpickler, path):
    """Runs `unpickler.load()`; any failure is a format error (nothing was executed)."""
    try:
        return unpickler.load()
    except CheckpointFormatError:
        raise
    except Exception as error:
        raise CheckpointFormatError(
            f"{path}: cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from None


def _load_legacy(path):
    """The pre-1.6 format: magic, protocol, sys info, object, keys, raw storages."""
    storages = {}

    def persistent_load(saved_id):
        if not isinstance(saved_id, tuple) or not saved_id:
            raise CheckpointFormatError(f"{path}: unsupported persistent id {saved_id!r}")
        if saved_id[0] == "module":  # source code of a pickled nn.Module class
            return _inert_class("torch.legacy", "module_source")(saved_id[1:])
        if saved_id[0] != "storage":
            raise CheckpointFormatError(f"{path}: unsupported persistent id {saved_id[0]!r}")
        storage_type, root_key, _location, numel, view_metadata = saved_id[1:6]
        root_key = str(root_key)
        if root_key not in storages:
            storages[root_key] = Storage(_storage_tag(storage_type).dtype, numel)
        root = storages[root_key]
        if view_metadata is not None:
            _view_key, offset, view_size = view_metadata
            return StorageView(root, offset, view_size)
        return root

    def load_one(handle):
        return _unpickle(RestrictedUnpickler(handle, persistent_load), path)

    with open(path, "rb") as handle:
        try:
            magic = load_one(handle)
        except CheckpointFormatError as error:
            raise CheckpointFormatError(
                f"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy "
                f"pickle stream: {error})"
            ) from None
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointFormatError(
                f"{path}: not a PyTorch checkpoint (a pickle without torch's magic number; "
                "the pre-0.4 tar format is not supported)"
            )
        protocol = load_one(handle)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointFormatError(f"{path}: unsupported legacy protocol {protocol!r}")
        sys_info = load_one(handle)
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        result = load_one(handle)
        keys = load_one(handle)
        byte_format = "<q" if little else ">q"
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise CheckpointFormatError(f"{path}: storage {key!r} listed but never used")
            (numel,) = struct.unpack(byte_format, handle.read(8))
            size = numel * storage.dtype.itemsize
            data = handle.read(size)
            if len(data) != size:
                raise CheckpointFormatError(f"{path}: storage {key!r} is truncated")
            storage.numel = numel
            storage.set_bytes(data, "little" if little else "big")
    return result


def read_torch_file(path):
    """Unpickles a `torch.save` file without executing anything from it.

    Args:
        path: a `.pth` / `.pt` / `.pth.tar` file (zip or legacy format).

    Returns:
        The saved object with `TorchTensor`s for tensors, plain containers,
        and `InertObject`s for everything else.

    Raises:
        FileNotFoundError, CheckpointFormatError.

    Example:

    >>> checkpoint = read_torch_file("tsm_r50_kinetics400.pth")
    >>> checkpoint["state_dict"]["cls_head.fc_cls.weight"].shape
    (400, 2048)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


__all__ = [
    "CheckpointFormatError",
    "InertObject",
    "TorchTensor",
    "inert_name",
    "is_inert",
    "read_torch_file",
]
