"""The benchmark matrix and the one JSON record written per run.

Device and host runs produce records with exactly the same keys, so their
tables line up and `run.py --report` can merge them:

```
{
  "schema_version": 1,
  "model": {"name", "path", "size_bytes"},
  "config": {"delegate", "threads", "runs", "warmup", "cpu_mask"},
  "target": {"kind": "device" | "host", "name", "soc", "os", "abi",
             "cpu_governor", "cpu_max_freq_khz", "serial", "runtime"},
  "runner": {"name", "flavor", "command"},
  "status": "ok" | "failed" | "skipped",
  "error": str | null,
  "output_format": "current" | "legacy" | "litert" | "interpreter" | null,
  "latency_ms": {"init", "first", "warmup_avg", "avg", "min", "max", "std",
                 "median", "p5", "p95", "count", "warmup_count"},
  "memory_mb": {"init", "overall", "peak"},
  "delegate_applied": bool | null,
  "log": file name of the raw output next to the record, or null,
  "timestamp": ISO 8601 UTC
}
```
"""

import dataclasses
import datetime
import pathlib
import re

SCHEMA_VERSION = 1
DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
TARGET_KEYS = ("kind", "name", "soc", "os", "abi", "cpu_governor", "cpu_max_freq_khz", "serial", "runtime")
LATENCY_KEYS = ("init", "first", "warmup_avg", "avg", "min", "max", "std", "median", "p5", "p95", "count", "warmup_count")
MEMORY_KEYS = ("init", "overall", "peak")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One cell of the benchmark matrix.

    Args:
        model_path: the `.tflite` file on this machine.
        delegate: one of `DELEGATES`: `"cpu"` (plain CPU kernels, XNNPACK
            off), `"xnnpack"`, `"gpu"`, `"nnapi"`.
        threads: CPU threads (`--num_threads`).
        runs: timed runs (`--num_runs`).
        warmup: warm-up runs (`--warmup_runs`).
        cpu_mask: hexadecimal CPU affinity mask (`taskset`), or None.

    Example:

    >>> spec = RunSpec(pathlib.Path("tsm.tflite"), "xnnpack", threads=4, runs=50, warmup=5)
    >>> spec.stem
    'tsm__xnnpack__t4'
    """

    model_path: pathlib.Path
    delegate: str
    threads: int
    runs: int
    warmup: int
    cpu_mask: str | None = None

    @property
    def model_name(self):
        return self.model_path.name

    @property
    def stem(self):
        """File name stem of this run's record and log."""
        return f"{safe_name(self.model_path.stem)}__{self.delegate}__t{self.threads}"

    def label(self):
        return f"{self.model_name} [{self.delegate}, {self.threads} thread{'s' if self.threads != 1 else ''}]"


def safe_name(text):
    """`text` with every run of characters other than `[A-Za-z0-9._-]` made `_`."""
    return _UNSAFE.sub("_", text).strip("_") or "unnamed"


def run_matrix(models, threads, delegates, runs, warmup, cpu_mask=None):
    """Every (model x delegate x threads) combination, in that nesting order."""
    return [
        RunSpec(pathlib.Path(model), delegate, int(count), int(runs), int(warmup), cpu_mask)
        for model in models
        for delegate in delegates
        for count in threads
    ]


def empty_target(kind):
    """A target description with every key present and unknown values None."""
    target = dict.fromkeys(TARGET_KEYS)
    target["kind"] = kind
    return target


def make_record(
    spec,
    target,
    runner,
    status,
    result=None,
    error=None,
    log=None,
    flavor=None,
    command=None,
    output_format=None,
    delegate_applied=None,
    latency_ms=None,
    memory_mb=None,
):
    """Builds the JSON-ready record of one run.

    Args:
        spec: the `RunSpec` that was run.
        target: dict describing the device or host (keys `TARGET_KEYS`).
        runner: name of the tool that ran it (`"benchmark_model"`,
            `"interpreter"`, `"litert-benchmark"`).
        status: `OK`, `FAILED` or `SKIPPED`.
        result: a `parse.BenchmarkResult` for a run whose output was parsed.
        error: one-line reason for a failed or skipped run.
        log: file name of the raw output, if one was written.
        flavor: the benchmark binary's flavour (`"tflite"` / `"litert"`).
        command: the command line that was run.
        output_format: overrides `result.output_format`.
        delegate_applied: whether the delegate took the graph, if known.
        latency_ms: a latency block, when there is no `result`.
        memory_mb: a memory block, when there is no `result`.
    """
    latency = dict.fromkeys(LATENCY_KEYS)
    memory = dict.fromkeys(MEMORY_KEYS)
    if result is not None:
        latency.update(result.latency_ms())
        memory.update(result.memory_mb())
        output_format = output_format or result.output_format
        if delegate_applied is None:
            delegate_applied = result.fully_accelerated
    latency.update(latency_ms or {})
    memory.update(memory_mb or {})
    size = spec.model_path.stat().st_size if spec.model_path.is_file() else None
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": spec.model_name, "path": str(spec.model_path), "size_bytes": size},
        "config": {
            "delegate": spec.delegate,
            "threads": spec.threads,
            "runs": spec.runs,
            "warmup": spec.warmup,
            "cpu_mask": spec.cpu_mask,
        },
        "target": {key: target.get(key) for key in TARGET_KEYS},
        "runner": {"name": runner, "flavor": flavor, "command": command},
        "status": status,
        "error": error,
        "output_format": output_format if status == OK else None,
        "latency_ms": latency,
        "memory_mb": memory,
        "delegate_applied": delegate_applied,
        "log": log,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
