"""Run the benchmark matrix on an Android device with `benchmark_model`.

Two binaries answer to the name `benchmark_model`, with different flags:

- `"tflite"`: TensorFlow Lite's tool (`tflite/tools/benchmark`, TF nightly
  `android_aarch64_benchmark_model`): delegates by `--use_xnnpack`,
  `--use_gpu`, `--use_nnapi`; `--use_xnnpack=false` turns off the XNNPACK
  delegate the runtime applies by default, leaving the plain CPU kernels.
- `"litert"`: LiteRT's CompiledModel tool (`litert/tools:benchmark_model`,
  LiteRT nightly `android_arm64/benchmark_model`): accelerators by
  `--use_cpu` (XNNPACK), `--use_gpu`, `--use_npu`; it has neither a
  no-XNNPACK CPU path nor NNAPI.

The flavour is read from the binary's `--help` output (or forced with
`--binary-flavor`), so a flag is never passed to a binary that would silently
ignore it and mislabel the run.
"""

import pathlib
import re
import shlex

from tsm_keras.android_bench import records
from tsm_keras.android_bench.adb import Adb
from tsm_keras.android_bench.errors import BenchError
from tsm_keras.android_bench.parse import BenchmarkOutputError, parse_benchmark_output

REMOTE_DIR = "/data/local/tmp"
BINARY_NAME = "benchmark_model"
TFLITE = "tflite"
LITERT = "litert"
FLAVORS = (TFLITE, LITERT)
DELEGATE_FLAGS = {
    TFLITE: {
        "cpu": ["--use_xnnpack=false"],
        "xnnpack": ["--use_xnnpack=true"],
        "gpu": ["--use_gpu=true"],
        "nnapi": ["--use_nnapi=true"],
    },
    LITERT: {
        "xnnpack": ["--use_cpu=true"],
        "gpu": ["--use_gpu=true"],
    },
}
DOWNLOAD_HINT = (
    "download the android_arm64 benchmark_model (LiteRT or TensorFlow nightly) or build it with bazel; "
    "see README.md, 'On-device benchmarks'"
)
_ELF_MACHINES = {3: "x86", 8: "MIPS", 40: "32-bit ARM", 62: "x86-64", 183: "arm64", 243: "RISC-V"}
_ANDROID_MACHINES = (40, 183)
_EXEC_FAILURES = re.compile(
    r"not executable|Permission denied|inaccessible or not found|Exec format error|cannot execute|"
    r"can't execute|syntax error|CANNOT LINK EXECUTABLE|No such file or directory"
)


def check_local_binary(path):
    """Checks that `path` is an ELF program built for Android's ARM CPUs.

    Raises:
        BenchError: the file is missing, not an ELF program, or built for
            another architecture (e.g. the linux_x86-64 download).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise BenchError(f"benchmark binary {path} does not exist: {DOWNLOAD_HINT}")
    if not path.is_file():
        raise BenchError(f"benchmark binary {path} is not a file: pass the benchmark_model program itself")
    with path.open("rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise BenchError(
            f"benchmark binary {path} is not an executable program (no ELF header): "
            f"pass the benchmark_model binary itself, not an archive or a script; {DOWNLOAD_HINT}"
        )
    byteorder = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], byteorder)
    if machine not in _ANDROID_MACHINES:
        built_for = _ELF_MACHINES.get(machine, f"ELF machine {machine}")
        raise BenchError(
            f"benchmark binary {path} is built for {built_for}, not for the phone: "
            f"use the android_arm64 build; {DOWNLOAD_HINT}"
        )


def detect_flavor(help_text):
    """`"tflite"` or `"litert"` from a binary's `--help` output, None if unclear."""
    if "--use_xnnpack" in help_text or "--use_nnapi" in help_text:
        return TFLITE
    if "--use_npu" in help_text or "benchmark_litert_model" in help_text:
        return LITERT
    return None


def benchmark_command(binary, model_remote, spec, flavor):
    """The device shell command for one run, as one string.

    Example:

    >>> spec = records.RunSpec(pathlib.Path("m.tflite"), "xnnpack", 4, 50, 5, "f0")
    >>> benchmark_command("/data/local/tmp/benchmark_model", "/data/local/tmp/m.tflite", spec, "tflite")
    'taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/m.tflite --num_threads=4 \
--use_xnnpack=true --num_runs=50 --warmup_runs=5'
    """
    argv = [
        binary,
        f"--graph={model_remote}",
        f"--num_threads={spec.threads}",
        *DELEGATE_FLAGS[flavor][spec.delegate],
        f"--num_runs={spec.runs}",
        f"--warmup_runs={spec.warmup}",
    ]
    if spec.cpu_mask:
        argv = ["taskset", spec.cpu_mask, *argv]
    return shlex.join(argv)


def device_target(adb):
    """Facts about the device that go into every record."""
    props = adb.getprop()
    governors = adb.cat_lines("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
    max_freqs = adb.cat_lines("/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq")
    release = props.get("ro.build.version.release")
    sdk = props.get("ro.build.version.sdk")
    target = records.empty_target("device")
    manufacturer = props.get("ro.product.manufacturer", "")
    model = props.get("ro.product.model")
    target.update(
        name=model or adb.serial,
        soc=props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware"),
        os=f"Android {release} (SDK {sdk})" if release else None,
        abi=props.get("ro.product.cpu.abi"),
        cpu_governor=",".join(sorted(set(governors))) or None,
        cpu_max_freq_khz=[int(value) for value in max_freqs if value.isdigit()] or None,
        serial=adb.serial,
    )
    if manufacturer and model and not model.lower().startswith(manufacturer.lower()):
        target["name"] = f"{manufacturer} {model}"
    return target


class DeviceBench:
    """Pushes the binary and models with adb and runs each `RunSpec`.

    Args:
        adb: an `Adb` bound to the device (see `Adb.connect`).
        binary: local path of `benchmark_model` to push, or None to use the
            one already at `/data/local/tmp/benchmark_model`.
        flavor: `"auto"`, `"tflite"` or `"litert"`.
        remote_dir: where binary and models go on the device.

    Example:

    >>> bench = DeviceBench(Adb.connect(), "benchmark_model")  # doctest: +SKIP
    >>> bench.prepare([pathlib.Path("tsm.tflite")])  # doctest: +SKIP
    >>> record = bench.run(spec, out_dir)  # doctest: +SKIP
    """

    runner = "benchmark_model"

    def __init__(self, adb, binary=None, flavor="auto", remote_dir=REMOTE_DIR):
        if flavor not in ("auto", *FLAVORS):
            raise BenchError(f"--binary-flavor must be auto, tflite or litert, got {flavor!r}")
        if binary is not None:
            check_local_binary(binary)
        self.adb = adb
        self.binary = None if binary is None else pathlib.Path(binary)
        self.flavor = None if flavor == "auto" else flavor
        self.remote_dir = remote_dir.rstrip("/")
        self.remote_binary = f"{self.remote_dir}/{BINARY_NAME}"
        self.target = device_target(adb)

    def remote_model(self, model_path):
        return f"{self.remote_dir}/{pathlib.Path(model_path).name}"

    def prepare(self, models):
        """Pushes the binary (if given) and the models; checks the binary runs."""
        if self.binary is not None:
            self.adb.push(self.binary, self.remote_binary)
            self.adb.shell(f"chmod 755 {shlex.quote(self.remote_binary)}")
        elif self.adb.shell(f"ls {shlex.quote(self.remote_binary)}").returncode != 0:
            raise BenchError(
                f"no {BINARY_NAME} at {self.remote_binary} on device {self.adb.serial} and no "
                f"--benchmark-binary given: pass --benchmark-binary PATH; {DOWNLOAD_HINT}"
            )
        probe = self.adb.shell(f"{shlex.quote(self.remote_binary)} --help")
        # The shell's own complaint names the binary ("/system/bin/sh:
        # /data/local/tmp/benchmark_model: not executable: 64-bit ELF file");
        # the tool's log lines about its plug-ins do not.
        failures = [
            line.strip()
            for line in probe.output.splitlines()
            if self.remote_binary in line and _EXEC_FAILURES.search(line)
        ]
        if failures:
            line = failures[0]
            raise BenchError(
                f"{self.remote_binary} does not run on device {self.adb.serial} ({line}): "
                f"it must be an Android arm64 build of benchmark_model; {DOWNLOAD_HINT}"
            )
        if self.flavor is None:
            self.flavor = detect_flavor(probe.output) or TFLITE
        self.target["runtime"] = f"benchmark_model ({self.flavor})"
        for model in models:
            self.adb.push(model, self.remote_model(model))

    def run(self, spec, out_dir):
        """Runs one spec; writes its raw output next to the record; returns the record."""
        supported = DELEGATE_FLAGS[self.flavor]
        if spec.delegate not in supported:
            reason = (
                f"the {self.flavor} benchmark_model has no '{spec.delegate}' option "
                f"(it offers: {', '.join(supported)})"
            )
            return records.make_record(
                spec, self.target, self.runner, records.SKIPPED, error=reason, flavor=self.flavor
            )
        command = benchmark_command(self.remote_binary, self.remote_model(spec.model_path), spec, self.flavor)
        shell = self.adb.shell(command)
        log_name = f"{spec.stem}.log"
        (pathlib.Path(out_dir) / log_name).write_text(
            f"$ adb -s {self.adb.serial} shell {command}\n# exit status {shell.returncode}\n{shell.output}"
        )
        common = dict(log=log_name, flavor=self.flavor, command=command)
        try:
            result = parse_benchmark_output(shell.output)
        except BenchmarkOutputError as error:
            return records.make_record(
                spec, self.target, self.runner, records.FAILED, error=f"{error.reason} -> {error.advice}", **common
            )
        return records.make_record(spec, self.target, self.runner, records.OK, result=result, **common)


def connect(serial=None, binary=None, flavor="auto"):
    """`DeviceBench` for the selected device (see `Adb.connect` for the errors)."""
    return DeviceBench(Adb.connect(serial), binary=binary, flavor=flavor)
