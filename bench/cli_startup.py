"""How fast every `tsm-*` command answers `--help` (goal: under 1 s).

Each command is run as a fresh process, `python -m tsm_keras.cli.<module>
--help` (what the console script runs), interleaved with the others, `--runs`
times; the table shows the median and the slowest wall time. Two reference
rows: the bare interpreter (`python -c pass`) and `import tensorflow`, what
`--help` would cost if it loaded TensorFlow.

    python bench/cli_startup.py [--runs 5]
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import REPO_ROOT, RESULTS_DIR, interleaved_timings, print_table, summarize, write_json  # noqa: E402
from bench.report import command_line  # noqa: E402

COMMANDS = {
    "tsm-train": "train",
    "tsm-test": "test",
    "tsm-import": "import_torch",
    "tsm-export": "export",
    "tsm-reparameterize": "reparameterize",
    "tsm-predict": "predict",
    "tsm-stream": "stream",
    "tsm-android-bench": "android_bench",
    "tsm-make-tfrecords": "make_tfrecords",
    "tsm-make-videos": "synthetic_videos",
}
GOAL_S = 1.0


def runner(arguments):
    environment = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run():
        subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=environment, cwd=REPO_ROOT)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "cli_startup.json"))
    args = parser.parse_args(argv)

    calls = {name: runner(["-m", f"tsm_keras.cli.{module}", "--help"]) for name, module in COMMANDS.items()}
    calls["python -c pass"] = runner(["-c", "pass"])
    calls["import tensorflow"] = runner(["-c", "import tensorflow"])
    timings = interleaved_timings(calls, runs=args.runs, warmup=1)
    results = {name: summarize(seconds) for name, seconds in timings.items()}
    rows = []
    for name, stats in results.items():
        command = name in COMMANDS
        met = stats["median_ms"] < GOAL_S * 1000.0 if command else None
        rows.append([f"{name} --help" if command else name, stats["median_ms"], max(timings[name]) * 1000.0,
                     {True: "yes", False: "no", None: "(reference)"}[met]])
    columns = ["command", "median ms", "slowest ms", "< 1 s"]
    print_table(f"Command start-up, --help, {args.runs} runs each", columns, rows)
    write_json(args.out, {"benchmark": "cli_startup", "command": command_line(), "args": vars(args),
                          "columns": columns, "rows": rows, "results": results, "goal_s": GOAL_S})


if __name__ == "__main__":
    main()
