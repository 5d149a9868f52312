"""Run the benchmark matrix on this machine with ai-edge-litert.

Two runners, selected with `--host-runner`:

- `"interpreter"` (default): `ai_edge_litert.interpreter.Interpreter` in this
  process, following benchmark_model's protocol: random inputs set once,
  `warmup` untimed-for-the-average runs, then `runs` timed `invoke()` calls;
  delegate `"xnnpack"` is the runtime's default XNNPACK delegate and `"cpu"`
  the builtin kernels without it (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`).
- `"litert-benchmark"`: the `litert-benchmark` command shipped by
  ai-edge-litert (LiteRT's CompiledModel API) in a subprocess, found beside
  this interpreter (a venv that is not activated) or else on PATH; its
  `BENCHMARK RESULTS` block parsed like the device output. Its CPU path is
  always XNNPACK, so it runs `"xnnpack"` and tries `"gpu"`.

`benchmark_tflite` is the reusable entry point for other benchmark scripts.
"""

import contextlib
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np

from tsm_keras.android_bench import records
from tsm_keras.benchmarking import cpu_model, latency_stats, package_version
from tsm_keras.android_bench.errors import BenchError
from tsm_keras.android_bench.parse import BenchmarkOutputError, parse_benchmark_output

INTERPRETER = "interpreter"
LITERT_BENCHMARK = "litert-benchmark"
RUNNERS = (INTERPRETER, LITERT_BENCHMARK)
RUNNER_DELEGATES = {INTERPRETER: ("cpu", "xnnpack"), LITERT_BENCHMARK: ("xnnpack", "gpu")}


def _rss_mb():
    """Resident set size of this process in MB (Linux), else None."""
    try:
        resident_pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_input(detail, rng):
    """A random array for one input, like benchmark_model's generated inputs.

    Floats are uniform in [-1, 1], integers uniform in their type's range
    clipped to [-128, 127], booleans uniform. For an online (streaming) model
    the state inputs get random values too: latency does not depend on them.
    """
    dtype = np.dtype(detail["dtype"])
    shape = [max(1, int(size)) for size in detail["shape"]]
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
    raise BenchError(f"input {detail['name']!r} has dtype {dtype}, which the host benchmark cannot fill")


@contextlib.contextmanager
def cpu_affinity(cpu_mask):
    """Pins this process to the CPUs of a hexadecimal mask, then restores."""
    if not cpu_mask:
        yield
        return
    cpus = mask_to_cpus(cpu_mask)
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as error:
        raise BenchError(f"--cpu-mask {cpu_mask} selects CPUs {sorted(cpus)}, not usable here: {error}") from error
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def mask_to_cpus(cpu_mask):
    """`"f0"` -> {4, 5, 6, 7}."""
    value = int(cpu_mask, 16)
    return {bit for bit in range(value.bit_length()) if value >> bit & 1}


def check_cpu_mask(cpu_mask):
    """Raises `BenchError` unless every CPU of the mask is available to this process."""
    if not cpu_mask:
        return
    wanted = mask_to_cpus(cpu_mask)
    available = os.sched_getaffinity(0)
    if not wanted <= available:
        raise BenchError(
            f"--cpu-mask {cpu_mask} selects CPUs {sorted(wanted)} but this machine offers {sorted(available)}: "
            "pick a mask within them"
        )


def benchmark_tflite(path, threads=1, use_xnnpack=True, runs=50, warmup=5, seed=0):
    """Benchmarks one .tflite file with the ai-edge-litert interpreter.

    Follows benchmark_model's protocol: create the interpreter and allocate
    tensors (`init`), fill every input with random values once, run `warmup`
    invocations (the first is `first`), then time `runs` invocations.

    Args:
        path: the .tflite file.
        threads: interpreter threads.
        use_xnnpack: True for the default XNNPACK delegate, False for the
            builtin CPU kernels only.
        runs: timed invocations (>= 1).
        warmup: warm-up invocations (>= 0).
        seed: seed of the random inputs.

    Returns:
        dict with `latency_ms` (keys `records.LATENCY_KEYS`), `memory_mb`
        (resident-set growth of this process: `init` after allocation,
        `overall` after the runs; `peak` is None), `xnnpack_applied` (whether
        the execution plan holds the XNNPACK delegate node) and `inputs`
        (name, shape, dtype of each input).

    Example:

    >>> stats = benchmark_tflite("tsm_online.tflite", threads=2, runs=20)  # doctest: +SKIP
    >>> stats["latency_ms"]["avg"]  # doctest: +SKIP
    3.71
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if runs < 1 or warmup < 0:
        raise BenchError(f"need runs >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    rss_start = _rss_mb()
    start = time.perf_counter()
    interpreter = _allocated_interpreter(
        Interpreter(model_path=str(path), num_threads=int(threads), experimental_op_resolver_type=resolver)
    )
    init_ms = (time.perf_counter() - start) * 1000.0
    rss_init = _rss_mb()

    rng = np.random.default_rng(seed)
    inputs = interpreter.get_input_details()
    for detail in inputs:
        interpreter.set_tensor(detail["index"], random_input(detail, rng))

    def timed_invoke():
        begin = time.perf_counter()
        interpreter.invoke()
        return (time.perf_counter() - begin) * 1000.0

    warmup_ms = [timed_invoke() for _ in range(warmup)]
    run_ms = [timed_invoke() for _ in range(runs)]
    rss_end = _rss_mb()

    latency = _latency_record(init_ms, warmup_ms, run_ms)
    try:
        xnnpack_applied = any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except (AttributeError, KeyError, RuntimeError):  # private API: tolerate its absence
        xnnpack_applied = None
    memory = {
        "init": None if rss_start is None else rss_init - rss_start,
        "overall": None if rss_start is None else rss_end - rss_start,
        "peak": None,
    }
    return {
        "latency_ms": latency,
        "memory_mb": memory,
        "xnnpack_applied": xnnpack_applied,
        "inputs": [
            {"name": detail["name"], "shape": [int(size) for size in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
            for detail in inputs
        ],
    }


def _allocated_interpreter(interpreter):
    """Gives dynamic input dimensions the size 1 (as benchmark_model does) and allocates."""
    for detail in interpreter.get_input_details():
        signature = detail.get("shape_signature")
        if signature is not None and any(int(size) < 0 for size in signature):
            fixed = [1 if int(size) < 0 else int(size) for size in signature]
            interpreter.resize_tensor_input(detail["index"], fixed)
    interpreter.allocate_tensors()
    return interpreter


def _latency_record(init_ms, warmup_ms, run_ms):
    """The `latency_ms` record (keys `records.LATENCY_KEYS`) of one run."""
    stats = latency_stats(run_ms)
    latency = dict.fromkeys(records.LATENCY_KEYS)
    latency.update({key: stats[key] for key in ("avg", "min", "max", "std", "median", "p5", "p95", "count")})
    latency.update(
        init=init_ms,
        first=(warmup_ms or run_ms)[0],
        warmup_avg=float(np.mean(warmup_ms)) if warmup_ms else None,
        warmup_count=len(warmup_ms),
    )
    return latency


def host_target(runner):
    """Facts about this machine, in the same keys as a device's."""
    governor_path = pathlib.Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    litert_version = package_version("ai-edge-litert") or "not installed"
    target = records.empty_target("host")
    target.update(
        name=f"host ({os.cpu_count()} CPUs)",
        soc=cpu_model(),
        os=platform.platform(terse=True),
        abi=platform.machine(),
        cpu_governor=governor_path.read_text().strip() if governor_path.exists() else None,
        runtime=f"ai-edge-litert {litert_version} ({runner})",
    )
    return target


def find_litert_benchmark():
    """Path of the `litert-benchmark` command, or None.

    The one installed with this interpreter's ai-edge-litert comes first (it
    sits beside `sys.executable`, which is not on PATH in a venv that is not
    activated), then PATH.
    """
    beside = shutil.which(LITERT_BENCHMARK, path=os.path.dirname(os.path.abspath(sys.executable)))
    return beside or shutil.which(LITERT_BENCHMARK)


class HostBench:
    """Runs each `RunSpec` on this machine.

    Args:
        runner: `"interpreter"` or `"litert-benchmark"`.
        cpu_mask: the `--cpu-mask` of the runs, checked against this machine.

    Example:

    >>> bench = HostBench("interpreter")
    >>> bench.target["kind"]
    'host'
    """

    def __init__(self, runner=INTERPRETER, cpu_mask=None):
        check_cpu_mask(cpu_mask)
        if runner not in RUNNERS:
            raise BenchError(f"--host-runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
        self.litert_benchmark = find_litert_benchmark() if runner == LITERT_BENCHMARK else None
        if runner == LITERT_BENCHMARK and self.litert_benchmark is None:
            raise BenchError(
                f"litert-benchmark found neither beside {sys.executable} nor on PATH: "
                "`pip install ai-edge-litert` or use --host-runner interpreter"
            )
        self.runner = runner
        self.target = host_target(runner)

    def prepare(self, models):
        """Nothing to copy on the host; kept for symmetry with `DeviceBench`."""

    def run(self, spec, out_dir):
        """Runs one spec and returns its record."""
        supported = RUNNER_DELEGATES[self.runner]
        if spec.delegate not in supported:
            reason = f"the host runner '{self.runner}' has no '{spec.delegate}' option (it offers: {', '.join(supported)})"
            return records.make_record(spec, self.target, self.runner, records.SKIPPED, error=reason)
        if self.runner == LITERT_BENCHMARK:
            return self._run_litert_benchmark(spec, out_dir)
        return self._run_interpreter(spec)

    def _run_interpreter(self, spec):
        command = (
            f"benchmark_tflite({str(spec.model_path)!r}, threads={spec.threads}, "
            f"use_xnnpack={spec.delegate == 'xnnpack'}, runs={spec.runs}, warmup={spec.warmup})"
        )
        common = dict(command=command)
        try:
            with cpu_affinity(spec.cpu_mask):
                stats = benchmark_tflite(
                    spec.model_path,
                    threads=spec.threads,
                    use_xnnpack=spec.delegate == "xnnpack",
                    runs=spec.runs,
                    warmup=spec.warmup,
                )
        except (ValueError, RuntimeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            return records.make_record(spec, self.target, self.runner, records.FAILED, error=reason, **common)
        return records.make_record(
            spec,
            self.target,
            self.runner,
            records.OK,
            output_format=INTERPRETER,
            delegate_applied=stats["xnnpack_applied"] if spec.delegate == "xnnpack" else None,
            latency_ms=stats["latency_ms"],
            memory_mb=stats["memory_mb"],
            **common,
        )

    def _run_litert_benchmark(self, spec, out_dir):
        argv = [
            self.litert_benchmark,
            "--model",
            str(spec.model_path),
            "--num_threads",
            str(spec.threads),
            "--num_runs",
            str(spec.runs),
            "--warmup_runs",
            str(spec.warmup),
        ]
        if spec.delegate == "gpu":
            argv.append("--use_gpu")
        cpus = mask_to_cpus(spec.cpu_mask) if spec.cpu_mask else None
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        output = completed.stdout + completed.stderr
        command = shlex.join(argv)
        log_name = f"{spec.stem}.log"
        (pathlib.Path(out_dir) / log_name).write_text(f"$ {command}\n# exit status {completed.returncode}\n{output}")
        common = dict(log=log_name, command=command)
        try:
            result = parse_benchmark_output(output)
        except BenchmarkOutputError as error:
            return records.make_record(
                spec, self.target, self.runner, records.FAILED, error=f"{error.reason} -> {error.advice}", **common
            )
        return records.make_record(spec, self.target, self.runner, records.OK, result=result, **common)
