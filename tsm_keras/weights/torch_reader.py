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

A hostile file cannot exhaust memory or time either; everything is checked
before anything is allocated:

- the pickle is scanned first (`check_pickle`, nothing run): at most
  `MAX_PICKLE_BYTES` and `MAX_PICKLE_OPS` opcodes, and no tuple that expands
  past `MAX_TUPLE_NODES` nodes through shared references;
- every tensor view must lie inside its storage and hold at most
  `MAX_TENSOR_ELEMENTS` (a stride-0 view of 2^31 elements over 3 is refused
  when it is unpickled);
- a zip record must declare exactly the bytes of its storage, and only the
  range a tensor covers is ever inflated (a record that inflates to
  gigabytes is refused or read for the few bytes its tensors need);
- any other failure (a damaged zip directory, an integer where a storage
  belongs, a legacy storage of 2^60 elements) is a `CheckpointFormatError`
  naming the file, never another exception.

PyTorch itself is not needed. `torch.load(weights_only=True)` would be safe
as well, but it refuses the whole file as soon as one non-allowlisted class
appears anywhere (as in every mmengine checkpoint that still has its
`message_hub`), and it would make torch a hard dependency of the import.
"""

import dataclasses
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# The largest tensor of a supported TSM is a ResNet-101 3x3 conv (512 * 512 * 9 = 2.4M
# elements) or a classifier (2048 * classes); 2^24 (64 MiB of float32) leaves room for
# 8192 classes and refuses what would copy more (e.g. hostile stride-0 views).
MAX_TENSOR_ELEMENTS = 2**24
MAX_TENSOR_DIMS = 8
# data.pkl of a real checkpoint is kilobytes to tens of MB (mmengine's training logs).
# Each opcode creates at most one object (~250 bytes for an empty set) and a string
# costs at most 4 bytes per byte of pickle, so unpickling stays within ~600 MB.
MAX_PICKLE_BYTES = 64 * 2**20
MAX_PICKLE_OPS = 2**22
MAX_TUPLE_NODES = 100_000


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


def describe(value):
    """A short description of a value read from a file, bounded whatever the value is.

    Hostile files hold values whose `repr` never ends (a list graph with
    shared references expands exponentially) or fails (an integer of 10^5
    digits); error messages use this instead.
    """
    if is_inert(value):
        return f"a pickled {value.qualified_name()}"
    if value is None or isinstance(value, (bool, float, complex)):
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, (str, bytes)):
        shown = repr(value[:60])
        return shown + ("..." if len(value) > 60 else "")
    if isinstance(value, (tuple, list, dict, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _count(value, what):
    """`value` if it is an integer in [0, 2^62), else `CheckpointFormatError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise CheckpointFormatError(f"{what} must be a non-negative integer, got {describe(value)}")
    return value


class Storage:
    """A flat typed buffer of the file whose elements are read on demand.

    Only the range a tensor covers is read (`read`), never the whole
    record, so a record that inflates to gigabytes costs what its tensors
    need.

    Args:
        dtype: numpy dtype of the elements.
        numel: the element count the file declares.
        reader: `reader(start_byte, num_bytes) -> bytes`, or None while the
            bytes are not located yet (legacy files put them after the pickle).
        where: the record named in error messages.
    """

    def __init__(self, dtype, numel, reader=None, where="storage"):
        self.dtype = dtype
        self.numel = _count(numel, f"{where}: element count")
        self.reader = reader
        self.byteorder = "little"
        self.where = where

    def read(self, start, count):
        """Elements `[start, start + count)` as a new numpy array."""
        if start + count > self.numel:
            raise CheckpointFormatError(
                f"{self.where}: elements [{start}, {start + count}) reach past its {self.numel} elements"
            )
        if self.reader is None:
            raise CheckpointFormatError(f"{self.where}: tensor data is missing from the checkpoint")
        size = count * self.dtype.itemsize
        try:
            data = self.reader(start * self.dtype.itemsize, size)
        except CheckpointFormatError:
            raise
        except Exception as error:  # a corrupt or hostile record: zlib, CRC, encryption, ...
            raise CheckpointFormatError(f"{self.where}: cannot be read ({_reason(error)})") from None
        if len(data) != size:
            raise CheckpointFormatError(f"{self.where}: truncated ({len(data)} of {size} bytes)")
        dtype = self.dtype
        if dtype.kind != "V" and dtype.itemsize > 1:  # bfloat16, bytes and bool have no byte order
            dtype = dtype.newbyteorder("<" if self.byteorder == "little" else ">")
        return np.frombuffer(data, dtype=dtype).astype(self.dtype.newbyteorder("="), copy=False)


class StorageView:
    """A legacy-format storage that is a slice of another one."""

    def __init__(self, base, offset, numel):
        self.base = base
        self.offset = _count(offset, "storage view offset")
        self.numel = _count(numel, "storage view size")
        self.dtype = base.dtype
        if self.offset + self.numel > base.numel:
            raise CheckpointFormatError(
                f"storage view [{self.offset}, {self.offset + self.numel}) reaches past its "
                f"storage of {base.numel} elements"
            )

    def read(self, start, count):
        return self.base.read(self.offset + start, count)


class TorchTensor:
    """A tensor of the checkpoint: shape and dtype now, values on `numpy()`.

    The geometry is checked when the tensor is unpickled, before anything
    is allocated: every element of the view must lie inside its storage, and
    the view may not hold (or span) more than `MAX_TENSOR_ELEMENTS`.
    Values are read from the storage only when asked for, so optimizer
    states and other unused tensors are never loaded.
    """

    def __init__(self, storage, storage_offset, size, stride):
        if not isinstance(storage, (Storage, StorageView)):
            raise CheckpointFormatError(f"a tensor's storage is {describe(storage)}, not a storage")
        if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
            raise CheckpointFormatError(
                f"tensor size and stride must be sequences, got {describe(size)} and {describe(stride)}"
            )
        if len(size) != len(stride) or len(size) > MAX_TENSOR_DIMS:
            raise CheckpointFormatError(f"bad tensor geometry: {len(size)} sizes, {len(stride)} strides")
        self.storage = storage
        self.storage_offset = _count(storage_offset, "tensor storage offset")
        self.shape = tuple(_count(dim, "tensor size") for dim in size)
        self.stride = tuple(_count(step, "tensor stride") for step in stride)
        # max(dim, 1): a (10^12, 0) tensor is empty but still names a huge dimension.
        if math.prod(max(dim, 1) for dim in self.shape) > MAX_TENSOR_ELEMENTS:
            raise CheckpointFormatError(
                f"tensor of shape {self.shape} is too large to import (more than "
                f"{MAX_TENSOR_ELEMENTS} elements; no TSM has such a tensor)"
            )
        span = 0 if 0 in self.shape else 1 + sum((dim - 1) * step for dim, step in zip(self.shape, self.stride))
        if self.storage_offset + span > storage.numel:
            raise CheckpointFormatError(
                f"tensor of shape {self.shape} (offset {self.storage_offset}, stride {self.stride}) "
                f"reaches past its storage of {storage.numel} elements"
            )
        if span > MAX_TENSOR_ELEMENTS:
            raise CheckpointFormatError(
                f"tensor of shape {self.shape} spans {span} elements of its storage (more than "
                f"{MAX_TENSOR_ELEMENTS})"
            )
        self._span = span

    @property
    def dtype(self):
        return self.storage.dtype

    @property
    def size(self):
        """The number of elements."""
        return math.prod(self.shape)

    def numpy(self):
        """The values as a new C-contiguous numpy array."""
        if self._span == 0:
            return np.zeros(self.shape, self.dtype)
        flat = self.storage.read(self.storage_offset, self._span)
        view = np.lib.stride_tricks.as_strided(
            flat,
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


_MARK = -1
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_FIXED_TUPLES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def _pop_to_mark(stack):
    items = []
    while stack and stack[-1] != _MARK:
        items.append(stack.pop())
    if stack:
        stack.pop()
    return items


def check_pickle(stream, where):
    """Refuses a pickle whose unpickling alone would exhaust memory or time.

    Scans the opcodes without running any (`pickletools.genops`) and
    follows the size of every tuple through the stack and the memo:

    - more than `MAX_PICKLE_OPS` opcodes (each may create an object) is
      refused;
    - a tuple of more than `MAX_TUPLE_NODES` nested nodes is refused: shared
      references make such a tuple exponentially large, and hashing it (as a
      dict key, a set element) would never end, inside the unpickler.

    Args:
        stream: binary file object positioned at the pickle, with `read`,
            `readline` and `tell`.
        where: the file or record named in errors.

    Returns:
        The length of the pickle in bytes (up to and with its STOP opcode).
    """
    stack, memo = [], {}
    try:
        for count, (opcode, arg, _position) in enumerate(pickletools.genops(stream)):
            if count >= MAX_PICKLE_OPS:
                raise CheckpointFormatError(
                    f"{where}: the pickle has more than {MAX_PICKLE_OPS} opcodes; no checkpoint "
                    "needs that many"
                )
            name = opcode.name
            if name in _MEMO_PUT or name == "MEMOIZE":
                memo[arg if name != "MEMOIZE" else len(memo)] = stack[-1] if stack else 1
                continue
            if name in _MEMO_GET:
                stack.append(memo.get(arg, 1))
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else 1)
                continue
            if name == "TUPLE" or name in _FIXED_TUPLES:
                if name == "TUPLE":
                    items = _pop_to_mark(stack)
                else:
                    items = [stack.pop() if stack else 1 for _ in range(_FIXED_TUPLES[name])]
                nodes = 1 + sum(items)
                if nodes > MAX_TUPLE_NODES:
                    raise CheckpointFormatError(
                        f"{where}: a tuple of more than {MAX_TUPLE_NODES} nested items (shared "
                        "references that expand exponentially); refusing to unpickle it"
                    )
                stack.append(nodes)
                continue
            before = [item.name for item in opcode.stack_before]
            if "mark" in before:
                _pop_to_mark(stack)
                before = before[: before.index("mark")]
            del stack[len(stack) - min(len(before), len(stack)) :]
            stack.extend(_MARK if item.name == "mark" else 1 for item in opcode.stack_after)
    except CheckpointFormatError:
        raise
    except Exception as error:  # genops: a truncated or malformed stream
        raise CheckpointFormatError(f"{where}: not a valid pickle ({_reason(error)})") from None
    return stream.tell()


def _reason(error):
    """`Type: message` of an exception, at most 200 characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 200 else text[:200] + "..."


def unreadable(path, error):
    """The `CheckpointFormatError` for any other failure while reading `path`."""
    return CheckpointFormatError(f"{path}: cannot be read as a PyTorch checkpoint ({_reason(error)})")


def _record_key(value, path):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CheckpointFormatError(f"{path}: storage key must be a string, got {describe(value)}")
    return str(value)


def _load_zip(path):
    archive = zipfile.ZipFile(path)
    names = set(archive.namelist())
    pickles = sorted(n for n in names if n.endswith("data.pkl") and n.count("/") == 1)
    if not pickles:
        raise CheckpointFormatError(f"{path}: zip file without a '<archive>/data.pkl' record")
    prefix = pickles[0][: -len("data.pkl")]

    def record_size(name, limit=None):
        size = archive.getinfo(name).file_size
        if limit is not None and size > limit:
            raise CheckpointFormatError(
                f"{path}: record {name!r} declares {size} bytes, more than the {limit} it may hold"
            )
        return size

    byteorder = "little"
    if prefix + "byteorder" in names:
        record_size(prefix + "byteorder", limit=16)
        byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointFormatError(f"{path}: byteorder record says {byteorder!r}")
    storages = {}

    def persistent_load(saved_id):
        if not isinstance(saved_id, tuple) or len(saved_id) != 5 or saved_id[0] != "storage":
            raise CheckpointFormatError(f"{path}: unsupported persistent id {describe(saved_id)}")
        storage_type, key, _location, numel = saved_id[1:5]
        key = _record_key(key, path)
        if key not in storages:
            dtype = _storage_tag(storage_type).dtype
            record = f"{prefix}data/{key}"
            if record not in names:
                raise CheckpointFormatError(f"{path}: record {record!r} is missing")
            numel = _count(numel, f"{path}: record {record!r}: element count")
            # torch writes exactly the storage's bytes; anything else is damage or a zip bomb.
            declared = record_size(record)
            if declared != numel * dtype.itemsize:
                state = "is truncated" if declared < numel * dtype.itemsize else "is larger than its storage"
                raise CheckpointFormatError(
                    f"{path}: record {record!r} {state}: it declares {declared} bytes, its storage "
                    f"of {numel} {dtype.name} elements needs {numel * dtype.itemsize}"
                )

            def read(start, size, record=record):
                with archive.open(record) as stream:  # inflates up to start + size, no further
                    stream.seek(start)
                    return stream.read(size)

            storages[key] = Storage(dtype, numel, reader=read, where=f"{path}: record {record!r}")
            storages[key].byteorder = byteorder
        return storages[key]

    record_size(pickles[0], limit=MAX_PICKLE_BYTES)
    data = io.BytesIO(archive.read(pickles[0]))
    check_pickle(data, f"{path}: {pickles[0]}")
    data.seek(0)
    result = _unpickle(RestrictedUnpickler(data, persistent_load), path)
    if not storages:
        archive.close()  # else the storages' readers keep it open until they are collected
    return result


def _unpickle(unpickler, path):
    """Runs `unpickler.load()`; any failure is a format error (nothing was executed)."""
    try:
        return unpickler.load()
    except CheckpointFormatError:
        raise
    except Exception as error:
        raise unreadable(path, error) from None


class _BoundedReader:
    """The next `limit` bytes of `handle`: what `check_pickle` may read of a legacy file."""

    def __init__(self, handle, limit):
        self.handle = handle
        self.left = limit
        self.start = handle.tell()

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.handle.read(size)
        self.left -= len(data)
        return data

    def readline(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.handle.readline(size)
        self.left -= len(data)
        return data

    def tell(self):
        return self.handle.tell() - self.start


def _load_legacy(path):
    """The pre-1.6 format: magic, protocol, sys info, object, keys, raw storages."""
    storages = {}

    def persistent_load(saved_id):
        if not isinstance(saved_id, tuple) or not saved_id:
            raise CheckpointFormatError(f"{path}: unsupported persistent id {describe(saved_id)}")
        if saved_id[0] == "module":  # source code of a pickled nn.Module class
            return _inert_class("torch.legacy", "module_source")(saved_id[1:])
        if saved_id[0] != "storage" or len(saved_id) != 6:
            raise CheckpointFormatError(f"{path}: unsupported persistent id {describe(saved_id)}")
        storage_type, root_key, _location, numel, view_metadata = saved_id[1:6]
        root_key = _record_key(root_key, path)
        if root_key not in storages:
            where = f"{path}: storage {root_key!r}"
            storages[root_key] = Storage(_storage_tag(storage_type).dtype, numel, where=where)
        root = storages[root_key]
        if view_metadata is not None:
            if not isinstance(view_metadata, tuple) or len(view_metadata) != 3:
                raise CheckpointFormatError(f"{path}: bad storage view {describe(view_metadata)}")
            _view_key, offset, view_size = view_metadata
            return StorageView(root, offset, view_size)
        return root

    def load_one(handle):
        start = handle.tell()
        length = check_pickle(_BoundedReader(handle, MAX_PICKLE_BYTES), path)
        handle.seek(start)
        data = io.BytesIO(handle.read(length))
        return _unpickle(RestrictedUnpickler(data, persistent_load), path)

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
            raise CheckpointFormatError(f"{path}: unsupported legacy protocol {describe(protocol)}")
        sys_info = load_one(handle)
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        result = load_one(handle)
        keys = load_one(handle)
        if not isinstance(keys, (list, tuple)):
            raise CheckpointFormatError(f"{path}: storage keys must be a list, got {describe(keys)}")
        _locate_legacy_storages(handle, path, storages, keys, little)
    return result


def _locate_legacy_storages(handle, path, storages, keys, little):
    """Checks each raw storage after a legacy pickle and gives it a lazy reader (no data is read)."""
    file_size = os.path.getsize(path)
    byte_format = "<q" if little else ">q"
    for key in keys:
        storage = storages.get(_record_key(key, path))
        if storage is None:
            raise CheckpointFormatError(f"{path}: storage {describe(key)} listed but never used")
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointFormatError(f"{path}: storage {describe(key)} is truncated")
        (numel,) = struct.unpack(byte_format, header)
        if numel != storage.numel:
            raise CheckpointFormatError(
                f"{path}: storage {describe(key)} holds {numel} elements, its tensors were "
                f"told {storage.numel}"
            )
        start = handle.tell()
        size = numel * storage.dtype.itemsize
        if start + size > file_size:
            raise CheckpointFormatError(f"{path}: storage {describe(key)} is truncated")
        handle.seek(size, os.SEEK_CUR)

        def read(offset, count, start=start):
            with open(path, "rb") as data:
                data.seek(start + offset)
                return data.read(count)

        storage.reader = read
        storage.byteorder = "little" if little else "big"


def read_torch_file(path):
    """Unpickles a `torch.save` file without executing anything from it.

    Whatever the file holds, reading it either succeeds or raises
    `CheckpointFormatError` naming the file and what is wrong; memory and
    time stay bounded (see the module docstring).

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
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except CheckpointFormatError as error:
        if str(error).startswith(path):
            raise
        raise CheckpointFormatError(f"{path}: {error}") from None
    except Exception as error:  # a hostile or damaged file: zip directory, I/O, ...
        raise unreadable(path, error) from None


__all__ = [
    "CheckpointFormatError",
    "InertObject",
    "TorchTensor",
    "check_pickle",
    "describe",
    "inert_name",
    "is_inert",
    "read_torch_file",
    "unreadable",
]
