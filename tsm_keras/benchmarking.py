"""What every latency measurement of the project shares: statistics, machine facts, markdown tables.

Used by the `bench/` scripts, `tsm_keras.android_bench` and the stream
runner, so that a median or a "machine" block means the same everywhere.
Imports neither TensorFlow nor Keras (versions are read from the installed
package metadata).
"""

import datetime
import importlib.metadata
import os
import pathlib
import platform

import numpy as np

PACKAGES = ("tensorflow", "keras", "ai-edge-litert")


def _percentile(sorted_values, percent):
    """benchmark_model's percentile: the element at index `n * p // 100` (no interpolation)."""
    return sorted_values[min(len(sorted_values) - 1, len(sorted_values) * percent // 100)]


def latency_stats(times_ms):
    """count / first / min / max / avg / std / median / p5 / p90 / p95 of run times.

    The definitions of TFLite's `benchmark_model` (`Stat`), so host and
    device figures compare: `std` is the population standard deviation and
    percentiles pick an element of the sorted times rather than interpolate.

    Args:
        times_ms: run times in milliseconds, in the order they were taken.
    """
    values = np.asarray(times_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("times_ms is empty: no runs to summarise")
    ordered = sorted(float(value) for value in values)
    return {
        "count": int(values.size),
        "first": float(values[0]),
        "min": float(values.min()),
        "max": float(values.max()),
        "avg": float(values.mean()),
        "std": float(values.std()),
        "median": float(_percentile(ordered, 50)),
        "p5": float(_percentile(ordered, 5)),
        "p90": float(_percentile(ordered, 90)),
        "p95": float(_percentile(ordered, 95)),
    }


def cpu_model():
    """The CPU's marketing name (Linux `/proc/cpuinfo`), else what `platform` knows."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name):
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts(packages=PACKAGES):
    """What the numbers were measured on: date, OS, CPU, Python and package versions."""
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    for name in packages:
        version = package_version(name)
        if version is not None:
            facts[name] = version
    return facts


def markdown_cell(value):
    """Text of a table cell: `|` escaped, on one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns, rows, right_aligned=()):
    """A GitHub markdown table.

    Args:
        columns: header names.
        rows: sequences of cells (already formatted; `str` is applied).
        right_aligned: the columns (names) to align right, e.g. numbers.
    """
    lines = ["| " + " | ".join(markdown_cell(column) for column in columns) + " |",
             "|" + "|".join("---:" if column in right_aligned else "---" for column in columns) + "|"]
    lines += ["| " + " | ".join(markdown_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
