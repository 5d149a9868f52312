"""Reading checkpoints never runs code from them, and real-world extras still import."""

import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as ref  # noqa: E402

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
    assert imported.tsm_config["num_segments"] == 2 and imported.inferred["num_segments"] == "checkpoint config"
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


def write_raw_checkpoint(path, payload):
    """A zip checkpoint whose pickle is `payload`, with one 4-byte storage '0'."""
    import collections
    import io

    marker = object()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 1) if obj is marker else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(payload(marker, collections.OrderedDict()))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/data/0", np.float32(1.0).tobytes())
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
