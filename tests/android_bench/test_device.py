"""android_bench on a device, through a stand-in `adb` placed on PATH.

No phone exists here. The stand-in is a small script named `adb` that logs
its arguments and replays recorded outputs (the fixtures under
tests/fixtures/benchmark_model); everything else -- device selection,
binary checks, command construction, parsing, JSON, table and chart -- runs
for real through `android_bench/run.py`'s `main`.
"""

import json
import os
import sys

import pytest

from tsm_keras.cli import android_bench as run

from tests import FIXTURES

SERIAL = "R5CW20ABCDE"
REMOTE_BINARY = "/data/local/tmp/benchmark_model"

STANDIN_SOURCE = """#!{python}
import json, pathlib, re, sys
here = pathlib.Path(__file__).resolve().parent
argv = sys.argv[1:]
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps(argv) + "\\n")
command = " ".join(argv)
for rule in json.loads((here / "rules.json").read_text()):
    if re.search(rule["pattern"], command):
        sys.stdout.write(rule["stdout"])
        sys.stderr.write(rule["stderr"])
        sys.exit(rule["returncode"])
sys.stderr.write("stand-in adb: no recorded output for: " + command + "\\n")
sys.exit(97)
"""


class StandInAdb:
    """A fake `adb` on PATH: rules are (regex on the joined arguments) -> recorded output."""

    def __init__(self, tmp_path, monkeypatch):
        self.bin_dir = tmp_path / "standin_bin"
        self.bin_dir.mkdir()
        script = self.bin_dir / "adb"
        script.write_text(STANDIN_SOURCE.format(python=sys.executable))
        script.chmod(0o755)
        self.rules = []
        self._save()
        monkeypatch.setenv("PATH", f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def _save(self):
        (self.bin_dir / "rules.json").write_text(json.dumps(self.rules))

    def on(self, pattern, stdout="", stderr="", returncode=0):
        self.rules.append({"pattern": pattern, "stdout": stdout, "stderr": stderr, "returncode": returncode})
        self._save()

    def calls(self):
        log = self.bin_dir / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def shell_commands(self):
        return [call[3] for call in self.calls() if call[:1] == ["-s"] and call[2] == "shell"]


def fixture(name):
    return (FIXTURES / "benchmark_model" / name).read_text()


def devices_listing(*entries):
    lines = ["* daemon not running; starting now at tcp:5037", "* daemon started successfully", "List of devices attached"]
    lines += [f"{serial}\t{state}" for serial, state in entries]
    return "\n".join(lines) + "\n\n"


def ready_device(adb, serial=SERIAL, help_fixture="tflite_help.txt"):
    """Rules of a connected, authorised phone whose benchmark_model runs."""
    adb.on(r"^devices$", devices_listing((serial, "device")))
    adb.on(r"shell getprop$", fixture("adb_getprop_galaxy_s23.txt"))
    adb.on(r"scaling_governor", fixture("adb_scaling_governor.txt"))
    adb.on(r"cpuinfo_max_freq", fixture("adb_cpuinfo_max_freq.txt"))
    adb.on(r" push ", "1 file pushed, 0 skipped. 35.1 MB/s (2768 bytes in 0.001s)\n")
    adb.on(r"shell chmod 755 ", "")
    adb.on(r"benchmark_model --help$", stderr=fixture(help_fixture), returncode=1)


def arm64_binary(path, machine=183):
    """A file with the ELF header of an executable for `machine` (183 = AArch64, 62 = x86-64)."""
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(header + bytes(44))
    return path


def fake_models(tmp_path, *names):
    paths = []
    for name in names:
        path = tmp_path / name
        path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))  # never read: the stand-in answers for the device
        paths.append(path)
    return paths


@pytest.fixture
def adb(tmp_path, monkeypatch):
    return StandInAdb(tmp_path, monkeypatch)


def test_full_matrix_commands_records_table_and_chart(adb, tmp_path, capsys):
    ready_device(adb)
    adb.on(r"--graph=", stderr=fixture("tflite_current_android.txt"))
    binary = arm64_binary(tmp_path / "benchmark_model")
    model_a, model_b = fake_models(tmp_path, "tsm_a.tflite", "tsm_b.tflite")
    out = tmp_path / "out"

    status = run.main(
        ["--models", str(model_a), str(model_b), "--benchmark-binary", str(binary), "--threads", "1", "4",
         "--delegates", "cpu", "xnnpack", "--runs", "30", "--warmup", "3", "--cpu-mask", "0xf0", "--out", str(out)]
    )

    assert status == 0, capsys.readouterr().err
    calls = adb.calls()
    assert calls[0] == ["devices"]
    assert ["-s", SERIAL, "push", str(binary), REMOTE_BINARY] in calls
    assert ["-s", SERIAL, "shell", f"chmod 755 {REMOTE_BINARY}"] in calls
    assert ["-s", SERIAL, "push", str(model_a), "/data/local/tmp/tsm_a.tflite"] in calls
    assert ["-s", SERIAL, "push", str(model_b), "/data/local/tmp/tsm_b.tflite"] in calls
    runs = [command for command in adb.shell_commands() if "--graph=" in command]
    assert runs[0] == (
        "taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/tsm_a.tflite "
        "--num_threads=1 --use_xnnpack=false --num_runs=30 --warmup_runs=3"
    )
    assert runs[3] == (
        "taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/tsm_a.tflite "
        "--num_threads=4 --use_xnnpack=true --num_runs=30 --warmup_runs=3"
    )
    assert len(runs) == 8 and sum("tsm_b.tflite" in command for command in runs) == 4
    # Binary and models are on the device before the first benchmark runs.
    first_run = calls.index(["-s", SERIAL, "shell", runs[0]])
    assert all(call[2] == "push" for call in calls[first_run - 2 : first_run])

    files = sorted(path.name for path in out.glob("*.json"))
    assert files == sorted(
        f"{model}__{delegate}__t{threads}.json"
        for model in ("tsm_a", "tsm_b")
        for delegate in ("cpu", "xnnpack")
        for threads in (1, 4)
    )
    record = json.loads((out / "tsm_b__xnnpack__t4.json").read_text())
    assert record["status"] == "ok" and record["output_format"] == "current"
    assert record["latency_ms"]["avg"] == pytest.approx(4.96874)  # "Inference (avg): 4968.74" us
    assert record["latency_ms"]["count"] == 201
    assert record["memory_mb"]["peak"] == pytest.approx(16.3828)
    assert record["config"] == {"delegate": "xnnpack", "threads": 4, "runs": 30, "warmup": 3, "cpu_mask": "f0"}
    assert record["target"]["name"] == "samsung SM-S911B"
    assert record["target"]["soc"] == "SM8550"
    assert record["target"]["os"] == "Android 14 (SDK 34)"
    assert record["target"]["abi"] == "arm64-v8a"
    assert record["target"]["cpu_governor"] == "walt"
    assert record["target"]["cpu_max_freq_khz"] == [2016000] * 3 + [2803200] * 4 + [3360000]
    assert record["target"]["serial"] == SERIAL
    assert record["runner"]["flavor"] == "tflite"
    assert "Inference timings in us" in (out / record["log"]).read_text()

    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| samsung SM-S911B |")]
    assert len(rows) == 8
    row = next(line for line in rows if "| tsm_b.tflite | xnnpack | 4 |" in line)
    # avg 4968.74 us, median 4901 us, std 187 us, max 6318 us, first 9120 us, init 38217 us, peak 16.3828 MB, 201 runs
    assert "| 4.97 | 4.90 | 0.187 |" in row and row.endswith("| 6.32 | 9.12 | 38.2 | 16.4 | 201 | ok |")
    assert "SoC/CPU: SM8550" in table and "governor: walt" in table

    from matplotlib import image

    assert image.imread(out / "latency.png").ndim == 3


def test_serial_picks_one_of_several_devices(adb, tmp_path):
    ready_device(adb, serial="emulator-5554")
    adb.rules.insert(0, {"pattern": r"^devices$", "stdout": devices_listing((SERIAL, "device"), ("emulator-5554", "device")),
                         "stderr": "", "returncode": 0})
    adb._save()
    adb.on(r"--graph=", stderr=fixture("tflite_current_android.txt"))
    (model,) = fake_models(tmp_path, "m.tflite")
    status = run.main(["--models", str(model), "--benchmark-binary", str(arm64_binary(tmp_path / "bm")),
                       "--serial", "emulator-5554", "--threads", "2", "--delegates", "xnnpack", "--out", str(tmp_path / "o")])
    assert status == 0
    assert all(call[1] == "emulator-5554" for call in adb.calls()[1:])


def test_litert_binary_gets_its_own_flags_and_skips_what_it_lacks(adb, tmp_path, capsys):
    ready_device(adb, help_fixture="litert_help.txt")
    adb.on(r"--graph=", stderr=fixture("litert_cpp_android.txt"))
    (model,) = fake_models(tmp_path, "online.tflite")
    out = tmp_path / "out"
    status = run.main(["--models", str(model), "--benchmark-binary", str(arm64_binary(tmp_path / "bm")),
                       "--threads", "4", "--delegates", "cpu", "xnnpack", "gpu", "nnapi", "--runs", "20",
                       "--warmup", "2", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    runs = [command for command in adb.shell_commands() if "--graph=" in command]
    assert runs == [
        "/data/local/tmp/benchmark_model --graph=/data/local/tmp/online.tflite --num_threads=4 --use_cpu=true "
        "--num_runs=20 --warmup_runs=2",
        "/data/local/tmp/benchmark_model --graph=/data/local/tmp/online.tflite --num_threads=4 --use_gpu=true "
        "--num_runs=20 --warmup_runs=2",
    ]
    skipped = json.loads((out / "online__nnapi__t4.json").read_text())
    assert skipped["status"] == "skipped" and "no 'nnapi' option" in skipped["error"]
    assert json.loads((out / "online__cpu__t4.json").read_text())["status"] == "skipped"
    gpu = json.loads((out / "online__gpu__t4.json").read_text())
    assert gpu["output_format"] == "litert" and gpu["runner"]["flavor"] == "litert"
    assert gpu["latency_ms"]["avg"] == pytest.approx(2.68)
    assert gpu["target"]["runtime"] == "benchmark_model (litert)"


def test_binary_already_on_device_is_used_without_push(adb, tmp_path):
    ready_device(adb)
    adb.on(rf"shell ls {REMOTE_BINARY}$", f"{REMOTE_BINARY}\n")
    adb.on(r"--graph=", stderr=fixture("tflite_legacy_native.txt"))
    (model,) = fake_models(tmp_path, "m.tflite")
    out = tmp_path / "out"
    assert run.main(["--models", str(model), "--threads", "1", "--delegates", "cpu", "--out", str(out)]) == 0
    assert not any(call[2] == "push" and call[4] == REMOTE_BINARY for call in adb.calls() if len(call) > 4)
    assert json.loads((out / "m__cpu__t1.json").read_text())["output_format"] == "legacy"


def test_rejected_model_fails_on_one_line_and_the_rest_still_runs(adb, tmp_path, capsys):
    ready_device(adb)
    adb.on(r"--graph=/data/local/tmp/bad\.tflite", stderr=fixture("tflite_rejected_model.txt"), returncode=1)
    adb.on(r"--graph=", stderr=fixture("tflite_current_android.txt"))
    good, bad = fake_models(tmp_path, "good.tflite", "bad.tflite")
    out = tmp_path / "out"
    status = run.main(["--models", str(good), str(bad), "--benchmark-binary", str(arm64_binary(tmp_path / "bm")),
                       "--threads", "1", "--delegates", "xnnpack", "--out", str(out)])
    assert status == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("error: bad.tflite [xnnpack, 1 thread]: Didn't find op for builtin opcode")
    assert "use a newer benchmark_model" in errors[0] and "bad__xnnpack__t1.log" in errors[0]
    assert errors[1] == "error: 1 of 2 runs failed (see the lines above)"
    failed = json.loads((out / "bad__xnnpack__t1.json").read_text())
    assert failed["status"] == "failed" and failed["latency_ms"]["avg"] is None
    assert json.loads((out / "good__xnnpack__t1.json").read_text())["status"] == "ok"
    assert "failed: Didn't find op" in (out / "results.md").read_text()


DEVICE_FAILURES = [
    ("no device", devices_listing(), [], ["no Android device found by adb", "enable USB debugging"]),
    (
        "several devices",
        devices_listing((SERIAL, "device"), ("emulator-5554", "device")),
        [],
        ["2 devices connected", "pass --serial SERIAL"],
    ),
    ("unknown serial", devices_listing((SERIAL, "device")), ["--serial", "XYZ"], ["device XYZ is not connected", SERIAL]),
    ("unauthorized", devices_listing((SERIAL, "unauthorized")), [], ["is unauthorized", "Allow USB debugging"]),
    ("offline", devices_listing((SERIAL, "offline")), [], ["is offline", "adb kill-server"]),
    (
        "no permissions",
        devices_listing((SERIAL, "no permissions (user in plugdev group; are your udev rules wrong?)")),
        [],
        ["no permission to open device", "udev rule"],
    ),
]


@pytest.mark.parametrize("case, listing, extra, expected", DEVICE_FAILURES, ids=[case[0] for case in DEVICE_FAILURES])
def test_device_selection_failures_are_one_line(adb, tmp_path, capsys, case, listing, extra, expected):
    adb.on(r"^devices$", listing)
    (model,) = fake_models(tmp_path, "m.tflite")
    status = run.main(["--models", str(model), *extra, "--out", str(tmp_path / "out")])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsm-android-bench: error: ")
    for text in expected:
        assert text in lines[0]
    assert adb.calls() == [["devices"]]  # nothing touched the device


def test_no_adb_on_path(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    (model,) = fake_models(tmp_path, "m.tflite")
    assert run.main(["--models", str(model)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "adb not found on PATH" in lines[0] and "platform-tools" in lines[0] and "--host" in lines[0]


@pytest.mark.parametrize(
    "make_binary, expected",
    [
        (lambda path: path, "does not exist"),
        (lambda path: (path.write_text("#!/bin/sh\necho hi\n"), path)[1], "no ELF header"),
        (lambda path: arm64_binary(path, machine=62), "built for x86-64"),
    ],
    ids=["missing", "script", "x86-64"],
)
def test_bad_local_binary_is_refused_before_touching_the_device(adb, tmp_path, capsys, make_binary, expected):
    ready_device(adb)
    binary = make_binary(tmp_path / "benchmark_model")
    (model,) = fake_models(tmp_path, "m.tflite")
    assert run.main(["--models", str(model), "--benchmark-binary", str(binary), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "android_arm64" in lines[0]
    assert not any("push" in call for call in adb.calls())


def test_binary_that_cannot_execute_on_the_device(adb, tmp_path, capsys):
    adb.on(r"benchmark_model --help$", stderr=f"/system/bin/sh: {REMOTE_BINARY}: not executable: 64-bit ELF file\n",
           returncode=126)
    ready_device(adb)
    (model,) = fake_models(tmp_path, "m.tflite")
    assert run.main(["--models", str(model), "--benchmark-binary", str(arm64_binary(tmp_path / "bm")),
                     "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert f"{REMOTE_BINARY} does not run on device {SERIAL}" in lines[0]
    assert "not executable: 64-bit ELF file" in lines[0] and "Android arm64 build" in lines[0]


def test_no_binary_given_and_none_on_the_device(adb, tmp_path, capsys):
    adb.on(rf"shell ls {REMOTE_BINARY}$", stderr=f"ls: {REMOTE_BINARY}: No such file or directory\n", returncode=1)
    ready_device(adb)
    (model,) = fake_models(tmp_path, "m.tflite")
    assert run.main(["--models", str(model), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"no benchmark_model at {REMOTE_BINARY}" in lines[0]
    assert "--benchmark-binary PATH" in lines[0]


def test_missing_model_is_refused_before_adb_runs(adb, tmp_path, capsys):
    assert run.main(["--models", str(tmp_path / "absent.tflite")]) == 2
    assert "model" in capsys.readouterr().err and adb.calls() == []
