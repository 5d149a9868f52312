"""Shared plumbing of the `bench/` scripts: timing, tables, JSON (statistics and machine facts: `tsm_keras.benchmarking`).

Every benchmark measures the things it compares side by side in one run
(interleaved, so that a noisy neighbour slows both), prints a table and writes
a JSON file under `bench/results/`.
"""

import json
import math
import os
import time

import numpy as np

from tsm_keras import benchmarking
from tsm_keras.benchmarking import latency_stats, machine_facts

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")


def interleaved_timings(functions, runs, warmup=2, pause=0.0, min_seconds=0.0):
    """Times each callable `runs` times (or more, see `min_seconds`), alternating between them.

    Args:
        functions: dict name -> zero-argument callable.
        runs: timed calls per callable, at least.
        warmup: untimed calls per callable first.
        pause: seconds to rest after each timed call (untimed), so that
            threads still spinning after one call do not slow the next.
        min_seconds: time each callable for about this long at least: the
            rounds are raised to `min_seconds` over the fastest callable's
            last warmup call, so that a short model gets as many seconds of
            samples as a long one (a burst of load then hits fewer of them).

    Returns:
        dict name -> list of seconds.
    """
    last_warmup = {}
    for name, function in functions.items():
        for _ in range(warmup):
            start = time.perf_counter()
            function()
            last_warmup[name] = time.perf_counter() - start
    if min_seconds and last_warmup:
        runs = max(runs, math.ceil(min_seconds / max(min(last_warmup.values()), 1e-9)))
    timings = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            timings[name].append(time.perf_counter() - start)
            time.sleep(pause)
    return timings


def summarize(seconds):
    """Median / p90 / min in milliseconds of a list of seconds (`latency_stats` definitions)."""
    stats = latency_stats(np.asarray(seconds, np.float64) * 1000.0)
    return {"median_ms": stats["median"], "p90_ms": stats["p90"], "min_ms": stats["min"], "runs": stats["count"]}


def print_table(title, columns, rows):
    """Prints `rows` (lists of cells) under `columns` with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[_cell(value) for value in row])
    Console(width=160).print(table)


def markdown_table(columns, rows):
    """The same table as GitHub markdown (for docs/benchmarks.md)."""
    return benchmarking.markdown_table(columns, [[_cell(value) for value in row] for row in rows])


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def repo_relative(value):
    """`value` relative to the repository root when it is a path inside it."""
    if isinstance(value, str) and value.startswith(REPO_ROOT + os.sep):
        return os.path.relpath(value, REPO_ROOT)
    return value


def write_json(path, payload):
    """Writes `payload` (plus machine facts) as JSON; creates the folder.

    Paths inside the repository recorded in `payload["args"]` are stored
    relative to its root, so results read the same from any checkout.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"machine": machine_facts(), **payload}
    if isinstance(payload.get("args"), dict):
        payload["args"] = {key: repo_relative(value) for key, value in payload["args"].items()}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    print(f"wrote {path}")
    return path
