"""Benchmark .tflite models on an Android phone (adb + benchmark_model) or on this host.

Every (model x delegate x threads) combination is run once; each run writes a
JSON record (and the tool's raw output as a .log), then a markdown table
(`results.md`) and a bar chart (`latency.png`) of all runs are written.

    tsm-android-bench --models a.tflite b.tflite \\
        --benchmark-binary ~/Downloads/benchmark_model --threads 1 4 \\
        --delegates cpu xnnpack gpu --runs 50 --warmup 5 --cpu-mask f0
    tsm-android-bench --host --models a.tflite --threads 1 2
    tsm-android-bench --report results/device_run results/host_run --out results/both

Exit status: 0 when every run succeeded or was skipped, 1 when a run failed
(each failure printed on one line), 2 for a problem to fix before anything
can run (no adb, no device, bad binary, bad arguments).
"""

import argparse
import datetime
import pathlib
import re
import sys

from tsm_keras.android_bench import records, report
from tsm_keras.android_bench.errors import BenchError
from tsm_keras.cli import common

_HEX_MASK = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _cpu_mask(text):
    if not _HEX_MASK.match(text) or int(text, 16) == 0:
        raise argparse.ArgumentTypeError(f"must be a non-zero hexadecimal CPU mask such as f0, got {text!r}")
    return text[2:] if text.lower().startswith("0x") else text


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-android-bench", description, epilog=epilog)
    parser.add_argument("--models", nargs="+", type=pathlib.Path, metavar="MODEL", help=".tflite files to benchmark")
    parser.add_argument("--serial", help="adb serial of the device (required when several are connected)")
    parser.add_argument(
        "--benchmark-binary",
        type=pathlib.Path,
        metavar="PATH",
        help="benchmark_model built for android arm64, pushed to /data/local/tmp "
        "(default: use the one already there)",
    )
    parser.add_argument(
        "--binary-flavor",
        choices=("auto", "tflite", "litert"),
        default="auto",
        help="which benchmark_model the binary is (default: read from its --help)",
    )
    parser.add_argument("--threads", nargs="+", type=_positive, default=[1, 4], metavar="N", help="default: 1 4")
    parser.add_argument(
        "--delegates",
        nargs="+",
        choices=records.DELEGATES,
        default=["cpu", "xnnpack"],
        help="cpu = plain CPU kernels (XNNPACK off), xnnpack, gpu, nnapi (default: cpu xnnpack)",
    )
    parser.add_argument("--runs", type=_positive, default=50, help="timed runs (--num_runs, default 50)")
    parser.add_argument("--warmup", type=_non_negative, default=5, help="warm-up runs (--warmup_runs, default 5)")
    parser.add_argument(
        "--cpu-mask", type=_cpu_mask, metavar="HEX", help="CPU affinity (taskset), e.g. f0 for the big cores"
    )
    parser.add_argument("--out", type=pathlib.Path, help="output directory (default: android_bench_results/<target>_<time>)")
    parser.add_argument("--host", action="store_true", help="benchmark on this machine with ai-edge-litert")
    parser.add_argument(
        "--host-runner",
        choices=("interpreter", "litert-benchmark"),
        default="interpreter",
        help="host engine: the Python interpreter (cpu, xnnpack) or litert-benchmark (xnnpack, gpu)",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        type=pathlib.Path,
        metavar="DIR",
        help="only rebuild table and chart from existing records (directories or .json files), e.g. to "
        "put device and host runs side by side",
    )
    return parser


def _check_models(models):
    names = {}
    for model in models:
        if not model.is_file():
            raise BenchError(f"model {model} does not exist (or is not a file)")
        if model.suffix != ".tflite":
            raise BenchError(f"model {model} is not a .tflite file")
        if model.name in names:
            raise BenchError(f"models {names[model.name]} and {model} share the file name {model.name}: rename one")
        names[model.name] = model


def _default_out(target):
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    return pathlib.Path("android_bench_results") / f"{records.safe_name(target['name'] if target['kind'] == 'device' else 'host')}_{stamp}"


def _progress(index, total, spec, record):
    prefix = f"[{index:>{len(str(total))}}/{total}] {spec.label()}"
    if record["status"] == records.OK:
        latency = record["latency_ms"]
        return f"{prefix}: avg {latency['avg']:.3f} ms over {latency['count']} runs"
    return f"{prefix}: {record['status']} ({record['error']})"


def _make_bench(args):
    if args.host:
        from tsm_keras.android_bench.host import HostBench

        return HostBench(args.host_runner, cpu_mask=args.cpu_mask)
    from tsm_keras.android_bench import device

    return device.connect(args.serial, args.benchmark_binary, args.binary_flavor)


def run(args):
    """Runs the CLI with parsed arguments; returns the exit status."""
    if args.report:
        try:
            loaded = report.load_records(args.report)
        except ValueError as error:
            raise BenchError(str(error)) from error
        out_dir = args.out or pathlib.Path("android_bench_results") / "report"
        out_dir.mkdir(parents=True, exist_ok=True)
        table, table_path, chart_path = report.write_report(loaded, out_dir)
        print(table)
        print(f"wrote {table_path} and {chart_path}")
        return 0

    _check_models(args.models)
    specs = records.run_matrix(args.models, args.threads, args.delegates, args.runs, args.warmup, args.cpu_mask)
    bench = _make_bench(args)
    out_dir = args.out or _default_out(bench.target)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench.prepare(args.models)

    all_records = []
    for index, spec in enumerate(specs, start=1):
        record = bench.run(spec, out_dir)
        report.write_record(record, out_dir)
        all_records.append(record)
        line = _progress(index, len(specs), spec, record)
        if record["status"] == records.FAILED:
            log = f" (log: {out_dir / record['log']})" if record["log"] else ""
            print(f"error: {spec.label()}: {record['error']}{log}", file=sys.stderr)
        else:
            print(line)

    table, table_path, chart_path = report.write_report(all_records, out_dir)
    print()
    print(table)
    print(f"wrote {len(all_records)} JSON records, {table_path} and {chart_path}")
    failed = [record for record in all_records if record["status"] == records.FAILED]
    if failed:
        print(f"error: {len(failed)} of {len(all_records)} runs failed (see the lines above)", file=sys.stderr)
        return 1
    return 0


def _run(args):
    if not args.report and not args.models:
        raise common.UsageError("--models is required (unless --report is given)")
    try:
        return run(args)
    except BenchError as error:  # a problem to fix before anything can run
        raise common.UsageError(error) from error


def main(argv=None):
    # Neither TensorFlow nor Keras: the host runs use ai-edge-litert only.
    return common.main(build_parser(), _run, argv, tensorflow=False)


if __name__ == "__main__":
    raise SystemExit(main())
