"""Collects the benchmark JSON files of `bench/results/` into `docs/benchmarks.md`.

Each `bench/*.py` script writes `bench/results/<benchmark>.json` with at least
`benchmark`, `machine` (`bench.common.machine_facts`), `args`, `columns` and
`rows` (the table it printed), and usually `command`. This script renders one
section per JSON file -- the table, the machine, the command that produced
it and the load average of the machine around the run (when
`bench/run_all.sh` recorded it) -- plus the host records of
`android_bench/run.py --host` found in `bench/results/android_bench_host/`,
and opens with the project's performance goals, met or not:

- temporal shift overhead <= 3% (TSM vs its TSN twin), every model and engine;
- online int8 TSM-MobileNetV2 per-frame latency <= 1.10x plain MobileNetV2;
- input pipeline >= 2x the baseline pipeline's clips/s;
- training >= 1.5x the PyTorch reference's clips/s at no more peak RSS, every
  backbone and batch;
- quickstart held-out top-1 in bfloat16 at most 1 point below float32.

    python bench/report.py [--results-dir bench/results] [--out docs/benchmarks.md]
    python bench/report.py --record-load NAME start|end   # used by bench/run_all.sh
"""

import argparse
import ast
import dataclasses
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import REPO_ROOT, RESULTS_DIR, markdown_table, repo_relative  # noqa: E402

DEFAULT_OUT = os.path.join(REPO_ROOT, "docs", "benchmarks.md")
ANDROID_HOST_DIR = "android_bench_host"
ANDROID_COMMAND_FILE = "command.txt"
LOAD_FILE = "load_averages.json"
BUSY_LOAD = 1.5
REPRODUCE = "bash bench/run_all.sh"

# Known benchmarks, in the order of the document: (benchmark, title).
SECTIONS = (
    ("shift_overhead", "Temporal shift overhead"),
    ("online_latency", "Online per-frame latency"),
    ("input_pipeline", "Input pipeline"),
    ("training_throughput", "Training throughput and peak memory"),
    ("inference_efficiency", "Offline inference efficiency"),
    ("bfloat16", "bfloat16 vs float32"),
    ("cli_startup", "Command start-up (--help)"),
)
SHIFT_OVERHEAD_GOAL = 0.03
ONLINE_INT8_GOAL = 1.10
INPUT_PIPELINE_GOAL = 2.0
TRAINING_SPEED_GOAL = 1.5
TRAINING_MEMORY_GOAL = 1.0
INFERENCE_PEAK_GOAL = 0.80
INFERENCE_SPEEDUP_GOAL = 1.6
BFLOAT16_TOP1_GOAL = 1.0  # points of top-1 that bfloat16 may lose
# The engines of bench/training_throughput.py, as the report names them.
TRAINING_ENGINES = {"tsm_keras": "tsm_keras", "pytorch": "PyTorch reference"}


def command_line(argv=None):
    """The command that ran this script, as typed from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = repo_relative(os.path.abspath(argv[0]))
    return shlex.join(["python", script, *argv[1:]])


def command_from_args(benchmark, args):
    """A command equivalent to a run, rebuilt from its recorded argparse values.

    Used for JSON files without a `command`: `--key value` for every value,
    lists spread out, `True` as a bare flag, `False` / None left out.
    """
    words = ["python", f"bench/{benchmark}.py"]
    for key, value in (args or {}).items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        value = repo_relative(value)
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


@dataclasses.dataclass
class Goal:
    """One performance goal: what is required, what was measured, whether it holds.

    The verdict is taken on the figure as shown (e.g. +3.0% meets <= 3%), so
    the table never contradicts itself.

    `met` is None when the benchmark did not measure it (no JSON, or not in it).
    """

    name: str
    target: str
    measured: str
    met: bool = None

    @property
    def verdict(self):
        return {True: "met", False: "**not met**", None: "not measured"}[self.met]


def shift_overhead_goals(payload):
    """One goal per model and engine: `TSM / TSN - 1 <= 3%` of the medians."""
    goals = []
    for model, engines in (payload or {}).get("results", {}).items():
        for engine, result in engines.items():
            overhead = result["TSM"]["median_ms"] / result["TSN"]["median_ms"] - 1.0
            name = f"shift overhead, {model} x{payload['args'].get('num_segments', '?')}, {engine}"
            goals.append(Goal(name, f"<= {SHIFT_OVERHEAD_GOAL:.0%}", f"{overhead:+.1%}",
                              round(overhead, 3) <= SHIFT_OVERHEAD_GOAL))
    return goals or [Goal("shift overhead", f"<= {SHIFT_OVERHEAD_GOAL:.0%}", "-", None)]


def online_latency_goals(payload):
    """int8 online TSM-MobileNetV2 per frame over plain MobileNetV2 <= 1.10, per thread count.

    Reads `results["int8"]["ratio_threads_<T>"]` (medians, measured interleaved).
    """
    name = "online int8 TSM-MobileNetV2 / plain MobileNetV2 per frame"
    target = f"<= {ONLINE_INT8_GOAL:.2f}x"
    int8 = ((payload or {}).get("results") or {}).get("int8") or {}
    ratios = {key[len("ratio_threads_"):]: value for key, value in int8.items() if key.startswith("ratio_threads_")}
    if not ratios:
        return [Goal(name, target, "-", None)]
    return [Goal(f"{name}, {threads} thread{'s' if threads != '1' else ''}", target, f"{ratio:.3f}x",
                 round(ratio, 3) <= ONLINE_INT8_GOAL)
            for threads, ratio in sorted(ratios.items(), key=lambda item: int(item[0]))]


def input_pipeline_goals(payload):
    """The project's input pipeline over the sequential baseline (`speedup_vs_baseline`) >= 2x."""
    name = "input pipeline clips/s over the sequential baseline"
    target = f">= {INPUT_PIPELINE_GOAL:.0f}x"
    speedup = (payload or {}).get("speedup_vs_baseline")
    if not isinstance(speedup, (int, float)):
        return [Goal(name, target, "-", None)]
    return [Goal(name, target, f"{speedup:.2f}x", round(speedup, 2) >= INPUT_PIPELINE_GOAL)]


def cli_startup_goals(payload):
    """Every `tsm-*` command answers `--help` in under `goal_s` (median wall time)."""
    name = "tsm-* --help wall time (median), slowest command"
    results = {key: value for key, value in ((payload or {}).get("results") or {}).items() if key.startswith("tsm-")}
    if not results:
        return [Goal(name, "< 1 s", "-", None)]
    goal = payload.get("goal_s", 1.0)
    slowest, stats = max(results.items(), key=lambda item: item[1]["median_ms"])
    return [Goal(f"{name} ({slowest})", f"< {goal:g} s", f"{stats['median_ms'] / 1000:.2f} s",
                 stats["median_ms"] < goal * 1000.0)]


def training_goals(payload):
    """tsm_keras over the PyTorch reference, per backbone and batch: clips/s >= 1.5x and peak RSS <= 1.0x.

    Reads `results[backbone][batch]["ratio"]` / `["memory_ratio"]` (best
    rounds of the two engines, run alternately). A JSON from before the
    comparison (no `engines` in its args: the project's step alone) has no
    goal rows.
    """
    name = "training clips/s vs PyTorch reference"
    target = f">= {TRAINING_SPEED_GOAL:g}x at no more peak RSS"
    if payload is None:
        return [Goal(name, target, "-", None)]
    if "engines" not in (payload.get("args") or {}):
        return []
    segments = payload["args"].get("num_segments", "?")
    goals = []
    for backbone, batches in payload.get("results", {}).items():
        for batch, result in batches.items():
            goal = Goal(f"{name}, TSM-{backbone} x{segments}, batch {batch}", target, "-", None)
            if result.get("ratio") is not None and result.get("memory_ratio") is not None:
                goal.measured = f"{result['ratio']:.2f}x, peak RSS {result['memory_ratio']:.2f}x"
                goal.met = (round(result["ratio"], 2) >= TRAINING_SPEED_GOAL
                            and round(result["memory_ratio"], 2) <= TRAINING_MEMORY_GOAL)
            goals.append(goal)
    return goals or [Goal(name, target, "-", None)]


def inference_efficiency_goals(payload):
    """Per batch: the model's FLOP/s >= 80% of the matmul's, and clips/s >= 1.6x the PyTorch reference's.

    A JSON from before the reference was timed has no speed-up row.
    """
    model = "offline inference TSM-resnet50 x8"
    if payload is None:
        return [Goal(f"{model}, fraction of the float32 matmul peak", f">= {INFERENCE_PEAK_GOAL:.0%}", "-", None)]
    model = f"offline inference TSM-{payload['args']['backbone']} x{payload['args']['num_segments']}"
    if "as_built" in payload["args"]:  # since the deploy form is what is timed
        model += " (deploy form)"
    goals = []
    for name, result in payload["results"].items():
        if not name.startswith("batch "):
            continue
        goals.append(Goal(f"{model}, fraction of the float32 matmul peak, batch {result['batch']}",
                          f">= {INFERENCE_PEAK_GOAL:.0%}", f"{result['fraction_of_peak']:.0%}",
                          round(result["fraction_of_peak"], 2) >= INFERENCE_PEAK_GOAL))
        if "speedup_over_reference" in result:
            speedup = result["speedup_over_reference"]
            goals.append(Goal(f"{model} clips/s vs PyTorch reference, batch {result['batch']}",
                              f">= {INFERENCE_SPEEDUP_GOAL:g}x", f"{speedup:.2f}x",
                              round(speedup, 2) >= INFERENCE_SPEEDUP_GOAL))
    return goals


def bfloat16_goals(payload):
    """The quickstart's held-out top-1 in bfloat16 at most 1 point below float32 (`accuracy`, `--accuracy`)."""
    name = f"quickstart top-1 bf16 within {BFLOAT16_TOP1_GOAL:g} point of float32"
    target = f"bf16 >= float32 - {BFLOAT16_TOP1_GOAL:g} point"
    accuracy = (payload or {}).get("accuracy")
    if not accuracy:
        return [Goal(name, target, "-", None)]
    difference = accuracy["top1_difference_points"]
    measured = (f"{accuracy['bfloat16']['top1']:.1%} vs {accuracy['float32']['top1']:.1%} "
                f"({difference:+.1f} points)")
    return [Goal(name, target, measured, round(difference, 1) >= -BFLOAT16_TOP1_GOAL)]


GOALS = {
    "shift_overhead": shift_overhead_goals,
    "online_latency": online_latency_goals,
    "input_pipeline": input_pipeline_goals,
    "training_throughput": training_goals,
    "cli_startup": cli_startup_goals,
    "inference_efficiency": inference_efficiency_goals,
    "bfloat16": bfloat16_goals,
}


def load_results(results_dir):
    """`{benchmark: payload}` of the benchmark JSON files of `results_dir`.

    Raises:
        ValueError: a JSON file there is unreadable or has no `benchmark`
            name (names the file).
    """
    results = {}
    if not os.path.isdir(results_dir):
        return results
    for name in sorted(os.listdir(results_dir)):
        path = os.path.join(results_dir, name)
        if not name.endswith(".json") or name == LOAD_FILE or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                payload = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable JSON file ({error})") from error
        if not isinstance(payload, dict) or not isinstance(payload.get("benchmark"), str):
            raise ValueError(f"{path}: not a bench result (no \"benchmark\" name)")
        results[payload["benchmark"]] = {**payload, "_file": os.path.relpath(path, REPO_ROOT)}
    return results


def load_android_records(results_dir):
    """Host records of android_bench (and the command that made them), or ([], None)."""
    directory = os.path.join(results_dir, ANDROID_HOST_DIR)
    if not os.path.isdir(directory) or not any(name.endswith(".json") for name in os.listdir(directory)):
        return [], None
    from tsm_keras.android_bench.report import load_records

    command_path = os.path.join(directory, ANDROID_COMMAND_FILE)
    command = None
    if os.path.isfile(command_path):
        with open(command_path, encoding="utf-8") as handle:
            command = handle.read().strip()
    return load_records([directory]), command


def load_loads(results_dir):
    path = os.path.join(results_dir, LOAD_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def record_load(results_dir, name, moment):
    """Stores the 1/5/15-minute load average under `name` / `moment` ("start" or "end")."""
    loads = load_loads(results_dir)
    loads.setdefault(name, {})[moment] = [round(value, 2) for value in os.getloadavg()]
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, LOAD_FILE), "w", encoding="utf-8") as handle:
        json.dump(loads, handle, indent=2)


def payload_table(payload):
    """The benchmark's own table (`columns` / `rows`), else its recorded figures as name / value rows."""
    if payload.get("columns") and payload.get("rows") is not None:
        return markdown_table(payload["columns"], payload["rows"])
    rows = [[name, value] for name, value in _flatten(payload) if name not in NOT_FIGURES]
    return markdown_table(["figure", "value"], rows)


NOT_FIGURES = {"benchmark", "machine", "command", "args", "notes", "step", "_file"}


def _flatten(value, prefix=""):
    """(dotted name, scalar) pairs of nested dicts; short lists of scalars joined."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not prefix and key in NOT_FIGURES:
                continue
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        if all(isinstance(item, (str, int, float, bool)) for item in value):
            yield prefix, ", ".join(_format(item) for item in value)
    else:
        yield prefix, value


def _format(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def machine_line(machine):
    if not machine:
        return "unknown machine"
    parts = [f"{machine.get('processor', '?')}, {machine.get('cpu_count', '?')} cores", machine.get("platform", "")]
    versions = [f"{name} {machine[key]}" for name, key in (("Python", "python"), ("TensorFlow", "tensorflow"),
                                                             ("Keras", "keras")) if machine.get(key)]
    return "; ".join(part for part in parts + [", ".join(versions)] if part) + f"; measured {machine.get('date', '?')}"


def load_line(load):
    if not load:
        return None
    words = []
    for moment in ("start", "end"):
        if moment in load:
            words.append(f"{' / '.join(f'{value:g}' for value in load[moment])} at the {moment}")
    busy = max(values[0] for values in load.values()) > BUSY_LOAD
    note = f" -- above {BUSY_LOAD}: the machine was shared, absolute times are pessimistic" if busy else ""
    return "Load average (1 / 5 / 15 min): " + ", ".join(words) + note


def script_summary(benchmark):
    """The first paragraph of `bench/<benchmark>.py`'s docstring, if the file exists."""
    path = os.path.join(REPO_ROOT, "bench", f"{benchmark}.py")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        docstring = ast.get_docstring(ast.parse(handle.read()))
    return " ".join(docstring.split("\n\n")[0].split()) if docstring else None


def collect_goals(results):
    goals = []
    for benchmark, goal_function in GOALS.items():
        goals += goal_function(results.get(benchmark))
    return goals


def training_summary(batches):
    """`best ... clips/s (batch b); peak RSS ... GiB at batch B[; failed at batch ...]` of one engine, or None."""
    ok = {int(batch): result for batch, result in batches.items() if result.get("status") == "ok"}
    if not ok:
        return None
    best = max(ok, key=lambda batch: ok[batch]["clips_per_s"])
    largest = max(ok)
    failed = sorted(int(batch) for batch, result in batches.items() if result.get("status") != "ok")
    return (f"best {ok[best]['clips_per_s']:.2f} clips/s (batch {best}); peak RSS "
            f"{ok[largest]['peak_rss_mib'] / 1024:.1f} GiB at batch {largest}"
            + (f"; failed at batch {', '.join(map(str, failed))}" if failed else ""))


def training_headlines(payload):
    """Per backbone (and engine, when the JSON compares two): best clips/s and peak RSS at the largest batch."""
    lines = []
    engines = ((payload or {}).get("args") or {}).get("engines")
    for backbone, batches in ((payload or {}).get("results") or {}).items():
        if engines is None:  # before the comparison: the project's step alone
            per_engine = {f"TSM-{backbone}": batches}
        else:
            per_engine = {f"TSM-{backbone}, {TRAINING_ENGINES.get(engine, engine)}":
                          {batch: result[engine] for batch, result in batches.items() if engine in result}
                          for engine in engines}
        for label, engine_batches in per_engine.items():
            summary = training_summary(engine_batches)
            if summary:
                lines.append(f"- Training {label}: {summary}.")
    return lines


def headline_figures(results):
    """Main figures of training (absolute, next to its ratio goals), inference efficiency and the bf16 speed-up."""
    lines = training_headlines(results.get("training_throughput"))
    inference = results.get("inference_efficiency")
    if inference:
        peak = inference["results"]["matmul"]["flop_per_s"]
        parts = [f"batch {result['batch']}: {result['clips_per_s']:.2f} clips/s = {result['fraction_of_peak']:.0%}"
                 + (f" ({result['speedup_over_as_built']:.2f}x the as-built form)"
                    if "speedup_over_as_built" in result else "")
                 for name, result in inference["results"].items() if name.startswith("batch ")]
        lines.append(f"- Offline inference TSM-{inference['args']['backbone']} x{inference['args']['num_segments']} "
                     f"({inference['clip_flop'] / 1e9:.1f} GFLOP a clip) as a fraction of the measured peak "
                     f"({peak / 1e9:.0f} GFLOP/s, float32 matmul): {'; '.join(parts)}.")
    speedups = (results.get("bfloat16") or {}).get("results") or {}
    parts = [f"TSM-{backbone} " + ", ".join(f"{workload} {result['speedup']:.2f}x" for workload, result in
                                           workloads.items())
             for backbone, workloads in speedups.items()]
    if parts:
        lines.append(f"- bf16 speed-up over float32 (median time ratio, >1 = bf16 faster): {'; '.join(parts)}.")
    return lines


def render(results, android_records=(), android_command=None, loads=None):
    """The markdown of `docs/benchmarks.md`."""
    loads = loads or {}
    goals = collect_goals(results)
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python bench/report.py` from bench/results/*.json: do not edit by hand. -->",
        "",
        f"Reproduce every table and this file: `{REPRODUCE}` (`python bench/report.py` alone re-renders it from "
        "the JSON files). Ratios are "
        "measured side by side in one process, interleaved, so that a busy machine slows both sides alike; absolute "
        "times depend on the machine and on its load, given with every table.",
        "",
        "## Goals",
        "",
        "| goal | target | measured | verdict |",
        "|---|---|---|---|",
        *[f"| {goal.name} | {goal.target} | {goal.measured} | {goal.verdict} |" for goal in goals],
        "",
    ]
    headlines = headline_figures(results)
    if headlines:
        lines += ["Other figures:", "", *headlines, ""]
    busy = [name for name, load in loads.items() if max(values[0] for values in load.values()) > BUSY_LOAD]
    if busy:
        lines += [f"Measured while other work shared the CPU (1-minute load average above {BUSY_LOAD} during: "
                  f"{', '.join(busy)}): ratios stay meaningful, absolute times are pessimistic, and a ratio "
                  "within a few percent of its goal can land on either side from one run to the next: repeat on a "
                  "quiet machine before reading a verdict near the threshold as final.", ""]
    known = [benchmark for benchmark, _ in SECTIONS]
    titles = dict(SECTIONS)
    order = known + sorted(name for name in results if name not in known)
    for benchmark in order:
        title = titles.get(benchmark, benchmark.replace("_", " ").capitalize())
        lines += [f"## {title}", ""]
        payload = results.get(benchmark)
        if payload is None:
            lines += [f"No results yet (`bench/results/{benchmark}.json` is missing).", ""]
            continue
        summary = script_summary(benchmark)
        if summary:
            lines += [summary, ""]
        command = payload.get("command") or command_from_args(benchmark, payload.get("args"))
        lines += [payload_table(payload), ""]
        lines += [f"- Command: `{command}`", f"- Machine: {machine_line(payload.get('machine'))}",
                  f"- Data: `{payload['_file']}`"]
        if payload.get("step"):
            lines.append(f"- Training step: {payload['step']}")
        load = load_line(loads.get(benchmark))
        if load:
            lines.append(f"- {load}")
        for note in payload.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    if android_records:
        from tsm_keras.android_bench.report import markdown_table as android_table

        lines += ["## LiteRT on this machine (android_bench --host)", "",
                  "The on-device tool's host mode, same protocol and record schema as a phone run.", "",
                  android_table(android_records).rstrip(), ""]
        if android_command:
            lines.append(f"- Command: `{android_command}`")
        lines.append(f"- Data: `bench/results/{ANDROID_HOST_DIR}/`")
        load = load_line(loads.get("android_bench_host"))
        if load:
            lines.append(f"- {load}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--record-load", nargs=2, metavar=("NAME", "MOMENT"),
                        help="store the current load average under NAME (MOMENT: start or end) and exit")
    args = parser.parse_args(argv)
    if args.record_load:
        name, moment = args.record_load
        if moment not in ("start", "end"):
            parser.error(f"--record-load: MOMENT must be start or end, got {moment!r}")
        record_load(args.results_dir, name, moment)
        return 0
    try:
        results = load_results(args.results_dir)
        android_records, android_command = load_android_records(args.results_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = render(results, android_records, android_command, load_loads(args.results_dir))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {args.out}")
    for goal in collect_goals(results):
        print(f"{goal.verdict:>14}: {goal.name} ({goal.target}): {goal.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
