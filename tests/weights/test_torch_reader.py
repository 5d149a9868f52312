"""Reading checkpoints never runs code from them, and real-world extras still import."""

import collections
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests import torch_reference as ref  # noqa: E402

from tsm_keras.convert import import_torch_checkpoint  # noqa: E402
from tsm_keras.weights import (  # noqa: E402
    CheckpointFormatError,
    UnsafeCheckpointError,
    read_checkpoint,
    read_torch_file,
)

SIZE = (32, 32, 3)


class Exploit:
    """Pickles as `os.system("touch <marker>")`: runs on a plain unpickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def mobilenet_state():
    """A small MMAction2 TSM-MobileNetV2 state dict (the file content under test)."""
    network = ref.MMRecognizer(ref.MMMobileNetV2TSM(num_segments=2), 1280, 3)
    return ref.randomize(network).state_dict()


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_object_in_the_weights_is_refused_and_not_run(mobilenet_state, tmp_path, zip_format):
    marker = tmp_path / "pwned"
    weights = dict(mobilenet_state, **{"backbone.payload": Exploit(marker)})
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": weights, "meta": {}}, path, _use_new_zipfile_serialization=zip_format)

    with pytest.raises(UnsafeCheckpointError, match=r"backbone\.payload.*posix\.system.*NOT executed"):
        import_torch_checkpoint(path, num_segments=2, input_shape=SIZE)
    assert not marker.exists()

    # Control: the payload is live, an ordinary unpickle runs it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_object_outside_the_weights_is_skipped_not_run(mobilenet_state, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "meta_payload.pth"
    torch.save({"state_dict": mobilenet_state, "meta": {"hook": Exploit(marker)}}, path)
    imported = import_torch_checkpoint(path, num_segments=2, input_shape=SIZE)
    assert not marker.exists()
    assert any("['meta']['hook']" in entry and "system" in entry for entry in imported.skipped)


def test_a_bare_pickle_of_an_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "object.pt"
    torch.save(Exploit(marker), path)
    with pytest.raises(UnsafeCheckpointError, match="not executed"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.fixture
def mmengine_classes(monkeypatch):
    """Stand-ins for mmengine's classes, importable only while saving."""
    classes = {}
    for module_name, class_name in (
        ("mmengine.logging.message_hub", "MessageHub"),
        ("mmengine.logging.history_buffer", "HistoryBuffer"),
        ("mmengine.optim.scheduler.lr_scheduler", "MultiStepLR"),
    ):
        parts = module_name.split(".")
        for depth in range(1, len(parts)):  # parent packages, so that pickle can import it
            package = ".".join(parts[:depth])
            if package not in sys.modules:
                monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
        module = types.ModuleType(module_name)
        cls = type(class_name, (), {"__module__": module_name})
        setattr(module, class_name, cls)
        monkeypatch.setitem(sys.modules, module_name, module)
        classes[class_name] = cls
    return classes


def test_mmengine_checkpoint_with_training_state_imports(mobilenet_state, mmengine_classes, monkeypatch, tmp_path):
    hub = mmengine_classes["MessageHub"]()
    hub.log_scalars = {"train/loss": mmengine_classes["HistoryBuffer"]()}
    hub.runtime_info = {"epoch": 50, "iter": np.int64(123456)}
    scheduler = mmengine_classes["MultiStepLR"]()
    scheduler.milestones = {25: 1, 45: 1}
    weights = dict(mobilenet_state)
    weights["data_preprocessor.mean"] = torch.tensor([114.75, 114.75, 114.75]).view(3, 1, 1)
    weights["data_preprocessor.std"] = torch.tensor([57.375, 57.375, 57.375]).view(3, 1, 1)
    config = (
        "model = dict(type='Recognizer2D', backbone=dict(type='MobileNetV2TSM', "
        "num_segments=2, shift_div=8, is_shift=True), cls_head=dict(type='TSMHead', "
        "num_segments=2, num_classes=3, in_channels=1280))\n"
    )
    checkpoint = {
        "meta": {
            "cfg": config,
            "seed": np.int64(42),
            "epoch": 50,
            "mmengine_version": "0.7.4",
            "dataset_meta": {"classes": ["a", "b", "c"]},
            "time": np.float64(1.5e9),
        },
        "state_dict": weights,
        "message_hub": hub,
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.ones(3)}},
            "param_groups": [{"lr": 0.02, "momentum": 0.9, "params": [0]}],
        },
        "param_schedulers": [scheduler],
    }
    path = tmp_path / "epoch_50.pth"
    torch.save(checkpoint, path)
    for name in list(sys.modules):  # the classes are gone when the file is read
        if name.startswith("mmengine"):
            monkeypatch.delitem(sys.modules, name)

    with pytest.raises(pickle.UnpicklingError):  # why torch's safe loader is not enough
        torch.load(path, weights_only=True)

    imported = import_torch_checkpoint(path, input_shape=SIZE)
    assert imported.spec.num_segments == 2 and imported.inferred["num_segments"] == "checkpoint config"
    assert imported.normalization == {
        "mean": [114.75] * 3,
        "std": [57.375] * 3,
        "origin": "checkpoint data_preprocessor",
    }
    assert imported.class_names == ["a", "b", "c"]
    skipped = " ".join(imported.skipped)
    for name in ("MessageHub", "HistoryBuffer", "MultiStepLR", "numpy"):
        assert name in skipped


def test_import_works_without_torch(mobilenet_state, monkeypatch, tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"state_dict": mobilenet_state}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    imported = import_torch_checkpoint(path, num_segments=2, input_shape=SIZE)
    assert imported.model.output_shape == (None, 3)


def test_tensors_are_read_exactly(tmp_path):
    values = {
        "float": torch.randn(2, 3),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),  # non-contiguous
        "slice": torch.arange(10.0)[3:7],  # offset into a shared storage
        "half": torch.randn(5).half(),
        "bfloat16": torch.randn(5).bfloat16(),
        "int64": torch.arange(4),
        "parameter": torch.nn.Parameter(torch.randn(3)),
    }
    for zip_format in (True, False):
        path = tmp_path / f"tensors_{zip_format}.pth"
        torch.save(values, path, _use_new_zipfile_serialization=zip_format)
        loaded = read_torch_file(path)
        for name, tensor in values.items():
            expected = tensor.detach().float().numpy() if name == "bfloat16" else tensor.detach().numpy()
            got = loaded[name].numpy()
            assert got.shape == tuple(tensor.shape)
            np.testing.assert_array_equal(got.astype(expected.dtype), expected, err_msg=name)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
        read_torch_file(garbage)
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointFormatError, match="magic number"):
        read_torch_file(plain_pickle)
    archive = tmp_path / "archive.pth"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match="data.pkl"):
        read_torch_file(archive)
    with pytest.raises(FileNotFoundError):
        read_torch_file(tmp_path / "missing.pth")


def write_raw_checkpoint(path, payload, numel=1, record=None, compression=zipfile.ZIP_STORED):
    """A zip checkpoint whose pickle is `payload(storage, hooks)`.

    `storage` stands for one float32 storage '0' of `numel` elements, whose
    record `record(stream)` writes (default: `numel` ones).
    """
    import collections
    import io

    marker = object()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is marker else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(payload(marker, collections.OrderedDict()))
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        with archive.open("archive/data/0", "w", force_zip64=True) as stream:
            if record is None:
                stream.write(np.ones(numel, "float32").tobytes())
            else:
                record(stream)
    return path


class Call:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_hostile_tensor_records_fail_cleanly(tmp_path):
    # A 10^12-element view of a 1-element storage (stride 0): refused, not allocated.
    huge = write_raw_checkpoint(
        tmp_path / "huge.pth",
        lambda storage, hooks: {"w": Call(torch._utils._rebuild_tensor_v2, storage, 0, (10**6, 10**6), (0, 0), False, hooks)},
    )
    with pytest.raises(CheckpointFormatError, match="too large"):
        read_torch_file(huge)
    # A view reaching past its storage.
    past = write_raw_checkpoint(
        tmp_path / "past.pth",
        lambda storage, hooks: {"w": Call(torch._utils._rebuild_tensor_v2, storage, 0, (4,), (1,), False, hooks)},
    )
    with pytest.raises(CheckpointFormatError, match="past its storage"):
        read_torch_file(past)["w"].numpy()
    # Calling something that is not callable in the safe set.
    odd = write_raw_checkpoint(tmp_path / "odd.pth", lambda storage, hooks: {"w": Call(torch.FloatStorage)})
    with pytest.raises(CheckpointFormatError, match="cannot be read"):
        read_torch_file(odd)


# -- hostile files: bounded memory and time, one-line errors -------------------------------

# Imports or reads one file in a fresh interpreter whose address space is capped at its
# baseline (after the imports) plus `extra` MiB, with 30 s for the file itself; prints the
# read tensors or the one-line error.
CAPPED_READER = r"""
import resource, signal, sys

from tsm_keras.convert import import_torch_checkpoint
from tsm_keras.weights import read_checkpoint

path, mode, extra = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open("/proc/self/status") as status:
    baseline = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (baseline + extra * 2**20, resource.RLIM_INFINITY))
signal.alarm(30)
try:
    if mode == "import":
        import_torch_checkpoint(path)
    else:
        checkpoint = read_checkpoint(path)
        print({key: tensor.numpy().tolist() for key, tensor in checkpoint.tensors.items()})
except Exception as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
"""


def read_capped(path, mode="import", extra_mib=1024):
    """`(exit status, stdout lines)` of `CAPPED_READER` on `path`."""
    import subprocess

    import tsm_keras

    root = os.path.dirname(os.path.dirname(os.path.abspath(tsm_keras.__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", CAPPED_READER, str(path), mode, str(extra_mib)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert completed.returncode in (0, 1), f"killed or crashed ({completed.returncode}): {completed.stderr[-3000:]}"
    return completed.returncode, completed.stdout.strip().splitlines()


def rebuild(storage, hooks, offset, size, stride):
    return Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, hooks)


def test_stride_zero_bomb_is_refused_before_allocating(tmp_path):
    # 2^31 - 1 float32 elements (8 GiB, 16 GiB as float64) viewed over a 3-element storage.
    bomb = write_raw_checkpoint(
        tmp_path / "stride0.pth",
        lambda storage, hooks: {"state_dict": {
            "data_preprocessor.mean": rebuild(storage, hooks, 0, (2**31 - 1,), (0,)),
            "data_preprocessor.std": rebuild(storage, hooks, 0, (3,), (1,)),
            "backbone.conv1.weight": rebuild(storage, hooks, 0, (3,), (1,)),
        }},
        numel=3,
    )
    assert os.path.getsize(bomb) < 1024
    status, lines = read_capped(bomb)
    assert status == 1 and len(lines) == 1
    assert lines[0].startswith(f"CheckpointFormatError: {bomb}: ")
    assert "(2147483647,) is too large" in lines[0] and "MemoryError" not in lines[0]


def test_views_under_the_element_cap_are_checked_before_they_are_read(mobilenet_state, tmp_path, monkeypatch):
    from tsm_keras.weights.torch_reader import MAX_TENSOR_ELEMENTS, TorchTensor

    side = int(MAX_TENSOR_ELEMENTS**0.5)
    wide = lambda storage, hooks: rebuild(storage, hooks, 0, (side, side), (0, 0))  # noqa: E731
    read_shapes = []
    original_numpy = TorchTensor.numpy
    monkeypatch.setattr(TorchTensor, "numpy", lambda self: read_shapes.append(self.shape) or original_numpy(self))

    # A normalisation tensor is one value per channel: its shape is refused unread.
    normalization = write_raw_checkpoint(
        tmp_path / "mean.pth",
        lambda storage, hooks: {"state_dict": {"data_preprocessor.mean": wide(storage, hooks),
                                               "data_preprocessor.std": rebuild(storage, hooks, 0, (3,), (1,))}},
        numel=3,
    )
    with pytest.raises(UnsafeCheckpointError, match=rf"data_preprocessor\.mean has shape \({side}, {side}\)"):
        read_checkpoint(normalization)
    assert read_shapes == []

    # A weight of the wrong shape is reported as a mismatch, never read or converted; the
    # other tensors (stride-0 views of the right shapes) are not read either: all or nothing.
    key = "backbone.conv1.conv.weight"
    weights = write_raw_checkpoint(
        tmp_path / "wide_weight.pth",
        lambda storage, hooks: {"state_dict": dict(
            {name: rebuild(storage, hooks, 0, tuple(value.shape), (0,) * value.dim())
             for name, value in mobilenet_state.items()},
            **{key: wide(storage, hooks)},
        )},
        numel=3,
    )
    with pytest.raises(ValueError, match=rf"{key} \({side}, {side}\) \(as Keras \?\)"):
        import_torch_checkpoint(weights, num_segments=2, input_shape=SIZE)
    assert read_shapes == []


def write_zeros(size):
    def record(stream):
        chunk = bytes(2**22)
        for _ in range(size // len(chunk)):
            stream.write(chunk)

    return record


def test_zip_bomb_record_is_refused_from_its_header(tmp_path):
    # A 3-element storage (the normalisation, read by every import) whose deflated record
    # inflates to 3 GiB.
    bomb = write_raw_checkpoint(
        tmp_path / "zip_bomb.pth",
        lambda storage, hooks: {"state_dict": {
            "data_preprocessor.mean": rebuild(storage, hooks, 0, (3,), (1,)),
            "data_preprocessor.std": rebuild(storage, hooks, 0, (3,), (1,)),
            "backbone.conv1.weight": rebuild(storage, hooks, 0, (3,), (1,)),
        }},
        numel=3,
        record=write_zeros(3 * 2**30),
        compression=zipfile.ZIP_DEFLATED,
    )
    assert os.path.getsize(bomb) < 20 * 2**20
    assert zipfile.ZipFile(bomb).getinfo("archive/data/0").file_size == 3 * 2**30
    status, lines = read_capped(bomb)
    assert status == 1 and len(lines) == 1
    assert lines[0] == (
        f"CheckpointFormatError: {bomb}: record 'archive/data/0' is larger than its storage: it "
        f"declares {3 * 2**30} bytes, its storage of 3 float32 elements needs 12"
    )


def test_a_large_deflated_record_is_inflated_only_as_far_as_its_tensors_need(tmp_path):
    # 1 GiB of float32 zeros then [1, 2, 3]: a valid storage; its tensor is the last 3 elements.
    numel = 2**28 + 3

    def record(stream):
        write_zeros(2**30)(stream)
        stream.write(np.float32([1, 2, 3]).tobytes())

    path = write_raw_checkpoint(
        tmp_path / "big_record.pth",
        lambda storage, hooks: {"state_dict": {"w": rebuild(storage, hooks, 2**28, (3,), (1,))}},
        numel=numel,
        record=record,
        compression=zipfile.ZIP_DEFLATED,
    )
    status, lines = read_capped(path, mode="read", extra_mib=256)  # the record is 4x that
    assert (status, lines) == (0, ["{'w': [1.0, 2.0, 3.0]}"])


def test_reference_graph_bomb_is_walked_once_per_node(tmp_path):
    # meta holds a list graph 60 wide and 9 deep: 60^9 paths, 9 distinct lists.
    graph = []
    for _ in range(9):
        graph = [graph] * 60
    path = tmp_path / "graph.pth"
    torch.save({"state_dict": {"w": torch.tensor([1.0, 2.0, 3.0])}, "meta": {"graph": graph}}, path)
    assert os.path.getsize(path) < 4096
    status, lines = read_capped(path, mode="read")
    assert (status, lines) == (0, ["{'w': [1.0, 2.0, 3.0]}"])
    status, lines = read_capped(path)
    assert status == 1 and len(lines) == 1 and "cannot tell which checkpoint family" in lines[0]


def test_tuple_graph_used_as_a_key_is_refused_before_unpickling(tmp_path):
    # Hashing a shared-reference tuple graph (as a dict key) would visit 60^9 nodes.
    graph = ()
    for _ in range(9):
        graph = (graph,) * 60
    body = pickle.dumps(graph, protocol=2)[2:-1]  # without PROTO and STOP
    data = b"\x80\x02}" + body + b"Ns."  # {graph: None}
    path = tmp_path / "tuple_key.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    status, lines = read_capped(path)
    assert status == 1 and len(lines) == 1
    assert lines[0].startswith(f"CheckpointFormatError: {path}: archive/data.pkl: a tuple of more than")


def legacy_checkpoint(path, tensors):
    torch.save(tensors, path, _use_new_zipfile_serialization=False)
    return path


def test_odd_records_are_format_errors(tmp_path):
    def raw(name, payload, **kwargs):
        return write_raw_checkpoint(tmp_path / f"{name}.pth", payload, **kwargs)

    cases = {
        raw("int_storage", lambda storage, hooks: {"w": rebuild(5, hooks, 0, (3,), (1,))}):
            "a tensor's storage is 5, not a storage",
        raw("inert_size", lambda storage, hooks: {"w": rebuild(storage, hooks, 0, Call(os.getcwd), (1,))}):
            "tensor size and stride must be sequences, got a pickled posix.getcwd",
        raw("negative_stride", lambda storage, hooks: {"w": rebuild(storage, hooks, 2, (3,), (-1,))}):
            "tensor stride must be a non-negative integer, got -1",
        raw("huge_offset", lambda storage, hooks: {"w": rebuild(storage, hooks, 2**200, (1,), (1,))}):
            "tensor storage offset must be a non-negative integer, got an integer of 201 bits",
        raw("empty_but_huge", lambda storage, hooks: {"w": rebuild(storage, hooks, 0, (10**12, 0), (1, 1))}):
            r"shape \(1000000000000, 0\) is too large",
        raw("strided_past", lambda storage, hooks: {"w": rebuild(storage, hooks, 0, (2, 2), (2, 1))}, numel=3):
            "reaches past its storage of 3 elements",
        raw("int_key", lambda storage, hooks: {"w": rebuild(storage, hooks, 0, (1,), (1,)), 7: 1}):
            "weights has the key 7, not a name",
        raw("huge_numel", lambda storage, hooks: {"w": storage}, numel=2**60, record=lambda s: s.write(bytes(4))):
            r"record 'archive/data/0' is truncated: it declares 4 bytes",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointFormatError, match=message) as raised:
            read_checkpoint(path)
        assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)

    # Legacy format: the element count in front of the storage bytes says 2^60.
    legacy = legacy_checkpoint(tmp_path / "legacy.pth", {"w": torch.ones(3)})
    data = bytearray(legacy.read_bytes())
    data[-20:-12] = (2**60).to_bytes(8, "little")
    legacy.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match=f"{legacy}: storage .* holds {2**60} elements, its tensors were told 3"):
        read_checkpoint(legacy)


def test_truncated_and_flipped_checkpoints_end_in_one_error_type(tmp_path):
    """Every prefix and every single-byte flip of two small checkpoints: read or CheckpointFormatError."""
    state = {"state_dict": {"backbone.w": torch.arange(6.0).reshape(2, 3), "backbone.b": torch.ones(3).half()},
             "meta": {"cfg": "model = dict(backbone=dict(num_segments=8))", "seed": np.int64(1)}}
    outcomes = collections.Counter()
    for zip_format in (True, False):
        original = tmp_path / f"small_{zip_format}.pth"
        torch.save(state, original, _use_new_zipfile_serialization=zip_format)
        data = original.read_bytes()
        broken = tmp_path / "broken.pth"
        variants = [data[:end] for end in range(len(data))]
        variants += [data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :] for at in range(len(data))]
        for variant in variants:
            broken.write_bytes(variant)
            try:
                checkpoint = read_checkpoint(broken)
                for tensor in checkpoint.tensors.values():
                    tensor.numpy()
            except (CheckpointFormatError, UnsafeCheckpointError) as error:
                assert str(error).startswith(str(broken)), str(error)
                outcomes["refused"] += 1
            else:
                outcomes["read"] += 1
    assert outcomes["refused"] > len(data)  # at least every truncation of one format
