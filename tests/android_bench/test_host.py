"""android_bench on this machine (--host) with ai-edge-litert, on tiny .tflite files built here."""

import json
import math
import os
import sys

import numpy as np
import pytest

from tsm_keras import benchmarking
from tsm_keras.android_bench import host, records
from tsm_keras.cli import android_bench as run
from tsm_keras.android_bench.errors import BenchError

from tests import FIXTURES



def _convert(model, path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """An offline-style classifier and an online-style model (frame + state in, logits + state out)."""
    import keras

    directory = tmp_path_factory.mktemp("tiny_tflite")
    frames = keras.Input((32, 32, 3), batch_size=1, name="frame")
    features = keras.layers.Conv2D(8, 3, activation="relu")(frames)
    logits = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(features))
    classifier = _convert(keras.Model(frames, logits), directory / "tiny_classifier.tflite")

    frame = keras.Input((16, 16, 3), batch_size=1, name="frame")
    state = keras.Input((16, 16, 2), batch_size=1, name="state")
    mixed = keras.layers.Conv2D(6, 3, padding="same")(keras.layers.Concatenate()([frame, state]))
    new_state = keras.layers.Lambda(lambda tensor: tensor[..., :2])(mixed)
    online_logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(mixed))
    online = _convert(keras.Model([frame, state], [online_logits, new_state]), directory / "tiny_online.tflite")
    return {"classifier": classifier, "online": online}


def test_latency_stats_match_hand_computed_values():
    stats = benchmarking.latency_stats([4.0, 1.0, 3.0, 2.0, 10.0])
    # mean 4; population variance (0 + 9 + 1 + 4 + 36) / 5 = 10; sorted [1, 2, 3, 4, 10]:
    # median = element 5*50//100 = 2 -> 3, p5 = element 0 -> 1, p90 and p95 = element 4 -> 10.
    assert stats == pytest.approx(
        {"count": 5, "first": 4.0, "min": 1.0, "max": 10.0, "avg": 4.0, "std": math.sqrt(10.0),
         "median": 3.0, "p5": 1.0, "p90": 10.0, "p95": 10.0}
    )


def test_random_inputs_respect_dtype_ranges():
    rng = np.random.default_rng(0)
    floats = host.random_input({"name": "x", "dtype": np.float32, "shape": [2, 64]}, rng)
    assert floats.dtype == np.float32 and floats.shape == (2, 64) and -1 <= floats.min() and floats.max() <= 1
    ints = host.random_input({"name": "q", "dtype": np.int8, "shape": [4096]}, rng)
    assert ints.dtype == np.int8 and ints.min() == -128 and ints.max() == 127
    uints = host.random_input({"name": "u", "dtype": np.uint8, "shape": [4096]}, rng)
    assert uints.min() == 0 and uints.max() == 127


def test_mask_to_cpus():
    assert host.mask_to_cpus("f0") == {4, 5, 6, 7}
    assert host.mask_to_cpus("1") == {0}


def test_benchmark_tflite_protocol_and_xnnpack_switch(tiny_models):
    with_xnnpack = host.benchmark_tflite(tiny_models["classifier"], threads=1, use_xnnpack=True, runs=7, warmup=3)
    latency = with_xnnpack["latency_ms"]
    assert latency["count"] == 7 and latency["warmup_count"] == 3
    assert latency["min"] <= latency["p5"] <= latency["median"] <= latency["p95"] <= latency["max"]
    assert latency["min"] <= latency["avg"] <= latency["max"] and latency["std"] >= 0
    assert latency["init"] > 0 and latency["first"] > 0 and latency["warmup_avg"] > 0
    assert set(latency) == set(records.LATENCY_KEYS)
    assert with_xnnpack["inputs"] == [{"name": "serving_default_frame:0", "shape": [1, 32, 32, 3], "dtype": "float32"}]
    assert with_xnnpack["xnnpack_applied"] is True

    without = host.benchmark_tflite(tiny_models["classifier"], threads=1, use_xnnpack=False, runs=2, warmup=0)
    assert without["xnnpack_applied"] is False
    assert without["latency_ms"]["warmup_avg"] is None and without["latency_ms"]["warmup_count"] == 0


def test_online_model_state_inputs_are_filled_too(tiny_models):
    stats = host.benchmark_tflite(tiny_models["online"], threads=2, runs=3, warmup=1)
    assert sorted(entry["shape"][-1] for entry in stats["inputs"]) == [2, 3]
    assert stats["latency_ms"]["count"] == 3


def test_host_cli_writes_json_table_and_chart(tiny_models, tmp_path, capsys):
    out = tmp_path / "host_run"
    affinity = os.sched_getaffinity(0)
    first_cpu = min(affinity)
    status = run.main(
        ["--host", "--models", str(tiny_models["classifier"]), str(tiny_models["online"]), "--threads", "1", "2",
         "--delegates", "cpu", "xnnpack", "gpu", "--runs", "5", "--warmup", "2",
         "--cpu-mask", format(1 << first_cpu, "x"), "--out", str(out)]
    )
    assert status == 0, capsys.readouterr().err
    assert os.sched_getaffinity(0) == affinity  # the pinning is undone after each run
    assert len(list(out.glob("*.json"))) == 2 * 3 * 2
    record = json.loads((out / "tiny_online__xnnpack__t2.json").read_text())
    assert record["status"] == "ok" and record["target"]["kind"] == "host"
    assert record["latency_ms"]["count"] == 5 and record["delegate_applied"] is True
    assert record["output_format"] == "interpreter"
    assert record["config"]["cpu_mask"] == format(1 << first_cpu, "x")
    skipped = json.loads((out / "tiny_classifier__gpu__t1.json").read_text())
    assert skipped["status"] == "skipped" and "no 'gpu' option" in skipped["error"]
    table = (out / "results.md").read_text()
    assert sum(line.startswith("| host (interpreter) | tiny_") for line in table.splitlines()) == 12
    from matplotlib import image

    assert image.imread(out / "latency.png").ndim == 3


@pytest.mark.skipif(host.find_litert_benchmark() is None, reason="ai-edge-litert without litert-benchmark")
def test_host_litert_benchmark_runner_output_is_parsed(tiny_models, tmp_path, capsys):
    out = tmp_path / "litert_run"
    status = run.main(
        ["--host", "--host-runner", "litert-benchmark", "--models", str(tiny_models["classifier"]),
         "--threads", "1", "--delegates", "cpu", "xnnpack", "--runs", "6", "--warmup", "2", "--out", str(out)]
    )
    assert status == 0, capsys.readouterr().err
    record = json.loads((out / "tiny_classifier__xnnpack__t1.json").read_text())
    assert record["output_format"] == "litert" and record["runner"]["name"] == "litert-benchmark"
    assert record["latency_ms"]["count"] == 6 and record["latency_ms"]["warmup_count"] == 2
    assert "BENCHMARK RESULTS" in (out / record["log"]).read_text()
    assert json.loads((out / "tiny_classifier__cpu__t1.json").read_text())["status"] == "skipped"


def test_litert_benchmark_is_found_beside_the_interpreter_when_not_on_path(tmp_path, monkeypatch):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    tool = venv_bin / "litert-benchmark"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    on_path = tmp_path / "elsewhere"
    on_path.mkdir()
    other = on_path / "litert-benchmark"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    assert host.find_litert_benchmark() == str(tool)  # this interpreter's own comes first
    monkeypatch.setenv("PATH", "")
    assert host.find_litert_benchmark() == str(tool)  # the venv is not activated
    tool.unlink()
    monkeypatch.setenv("PATH", str(on_path))
    assert host.find_litert_benchmark() == str(other)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(BenchError, match=rf"litert-benchmark found neither beside {venv_bin / 'python'} nor on PATH"):
        host.HostBench(host.LITERT_BENCHMARK)


def test_host_cpu_mask_outside_this_machine_is_refused(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"unused")
    absent_cpu = max(os.sched_getaffinity(0)) + 1
    assert run.main(["--host", "--models", str(model), "--cpu-mask", format(1 << absent_cpu, "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"selects CPUs [{absent_cpu}]" in lines[0]


def test_host_model_the_runtime_rejects(tmp_path, capsys):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"this is not a flatbuffer" * 8)
    out = tmp_path / "out"
    status = run.main(["--host", "--models", str(broken), "--threads", "1", "--delegates", "xnnpack", "--out", str(out)])
    assert status == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error: broken.tflite [xnnpack, 1 thread]: ")
    assert lines[-1] == "error: 1 of 1 runs failed (see the lines above)"
    assert json.loads((out / "broken__xnnpack__t1.json").read_text())["status"] == "failed"


def _keys(value, prefix=""):
    if isinstance(value, dict):
        return {key for name, item in value.items() for key in _keys(item, f"{prefix}{name}.")} | {prefix}
    return {prefix}


def test_device_and_host_records_share_one_schema_and_merge_into_one_table(tiny_models, tmp_path, capsys):
    from tsm_keras.android_bench.parse import parse_benchmark_output

    fixture = FIXTURES / "benchmark_model" / "tflite_current_android.txt"
    spec = records.RunSpec(tiny_models["classifier"], "xnnpack", 4, 50, 5)
    device_target = records.empty_target("device")
    device_target.update(name="samsung SM-S911B", soc="SM8550")
    device_record = records.make_record(
        spec, device_target, "benchmark_model", records.OK, result=parse_benchmark_output(fixture.read_text()),
        flavor="tflite", command="benchmark_model ...", log="x.log",
    )
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    (device_dir / "tiny_classifier__xnnpack__t4.json").write_text(json.dumps(device_record))

    host_dir = tmp_path / "host"
    assert run.main(["--host", "--models", str(spec.model_path), "--threads", "4", "--delegates", "xnnpack",
                     "--runs", "3", "--warmup", "1", "--out", str(host_dir)]) == 0
    host_record = json.loads((host_dir / "tiny_classifier__xnnpack__t4.json").read_text())
    assert _keys(host_record) == _keys(device_record)

    merged = tmp_path / "merged"
    capsys.readouterr()
    assert run.main(["--report", str(device_dir), str(host_dir), "--out", str(merged)]) == 0
    table = (merged / "results.md").read_text()
    rows = [line for line in table.splitlines() if "| tiny_classifier.tflite | xnnpack | 4 |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| samsung SM-S911B", "| host (interpreter)"]
    assert "| 4.97 |" in rows[0]
    assert (merged / "latency.png").stat().st_size > 0


def test_report_refuses_foreign_json(tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    assert run.main(["--report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not an android_bench record" in capsys.readouterr().err
