"""Training throughput (clips/s) and peak memory of TSM models, per batch size.

Every (backbone, batch size) configuration runs in its own subprocess, so the
peak resident set size (`ru_maxrss`) is that configuration's alone. The
subprocess builds the model, the optimizer and the step exactly as
`train/fit.py` does (`tsm_keras.training.trainer.build_model`,
`build_optimizer`, `make_train_step`: forward, cross-entropy, gradients,
`GroupedSGD` with the TSM parameter groups, weight decay and gradient
clipping by global norm, the warmup learning-rate schedule) on the default
(one-device) strategy, feeds it one fixed random batch from a repeated
`tf.data` dataset (the input pipeline is measured by
`bench/input_pipeline.py`), runs `--warmup` untimed steps (the first one
traces the graph), then times `--steps` steps. "RSS before training" is the
peak RSS once the TensorFlow runtime, model, optimizer and batch exist, before
the first step; the peak RSS adds the step's activations and gradients.

    python bench/training_throughput.py [--configs mobilenet_v2:1,4,8,16 resnet50:1,2,4,8] [--steps 5]

Configurations run one after the other (not interleaved): the clips/s are
absolute figures of this machine, noisy when it is shared.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RESULTS_DIR, print_table, summarize, write_json  # noqa: E402
from bench.report import command_line  # noqa: E402

DEFAULT_CONFIGS = ("mobilenet_v2:1,4,8,16", "resnet50:1,2,4,8")
RESULT_MARKER = "TRAINING_THROUGHPUT_RESULT "
STEP_DESCRIPTION = (
    "tsm_keras.training.trainer.make_train_step (the train/fit.py step): GroupedSGD with the TSM parameter "
    "groups, weight decay 1e-4, momentum 0.9, global-norm clipping at 20, warmup schedule; default strategy, float32"
)


def parse_configuration(text):
    """`"resnet50:1,2,4"` -> `("resnet50", [1, 2, 4])`."""
    backbone, separator, batches = text.partition(":")
    try:
        batch_sizes = [int(value) for value in batches.split(",")] if separator else []
    except ValueError:
        batch_sizes = []
    if not backbone or not batch_sizes or min(batch_sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected BACKBONE:B1,B2,... with batch sizes >= 1, got {text!r}")
    return backbone, batch_sizes


def training_config(backbone, batch_size, num_segments, size, num_classes, precision="float32"):
    """The validated training `Config` of one configuration (MMAction2 recipe defaults)."""
    from tsm_keras.training import Config

    return Config.from_dict({
        "model": {"backbone": backbone, "num_classes": num_classes, "layout": "torch"},
        # The data section only sets the clip shape: the benchmark feeds its own batch,
        # the list is never read.
        "data": {"source": "video", "train_list": "unused.txt", "num_clips": num_segments, "crop_size": size},
        "train": {"batch_per_replica": batch_size, "seed": 0, "precision": precision},
    })


def peak_rss_mib():
    """Peak resident set size of this process so far, MiB (`ru_maxrss` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_training_step(backbone, batch_size, num_segments, size, num_classes, precision="float32"):
    """The real training step of one configuration on one fixed random batch.

    Returns:
        `(run_step, model)`: `run_step()` runs one step and returns its loss.
    """
    import keras
    import tensorflow as tf

    from tsm_keras.models.precision import precision_scope
    from tsm_keras.training.schedule import build_schedule
    from tsm_keras.training.trainer import build_model, build_optimizer, make_train_step

    config = training_config(backbone, batch_size, num_segments, size, num_classes, precision)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    with precision_scope(precision):
        model = build_model(config)
    schedule = build_schedule(config, config.optimizer.lr, steps_per_epoch=1000)
    optimizer = build_optimizer(config, model, schedule)
    step = make_train_step(model, optimizer, strategy, global_batch=batch_size)

    clips = tf.random.normal((batch_size, num_segments, size, size, 3), seed=0)
    labels = tf.random.uniform((batch_size,), maxval=num_classes, dtype=tf.int32, seed=0)
    iterator = iter(tf.data.Dataset.from_tensors((clips, labels)).repeat())
    return (lambda: float(step(iterator)[0])), model


def measure_configuration(backbone, batch_size, num_segments, size, num_classes, steps, warmup):
    """Runs in the subprocess: builds the real training step and times it."""
    run_step, model = build_training_step(backbone, batch_size, num_segments, size, num_classes)
    built_rss = peak_rss_mib()

    start = time.perf_counter()
    for _ in range(warmup):
        loss = run_step()
    warmup_seconds = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = run_step()
        seconds.append(time.perf_counter() - start)
    return {
        "status": "ok",
        "step_seconds": seconds,
        "step": summarize(seconds),
        "clips_per_s": batch_size / (summarize(seconds)["median_ms"] / 1000.0),
        "warmup_seconds": warmup_seconds,
        "loss": loss,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_training_mib": built_rss,
        "params": model.count_params(),
    }


def run_configuration(backbone, batch_size, args):
    """Runs one configuration in a fresh Python process; returns its result dict."""
    request = {"backbone": backbone, "batch_size": batch_size, "num_segments": args.num_segments,
               "size": args.size, "num_classes": args.num_classes, "steps": args.steps, "warmup": args.warmup}
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(request)]
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {args.timeout} s"}
    wall = time.perf_counter() - start
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return {**json.loads(line[len(RESULT_MARKER):]), "wall_seconds": wall}
    # Killed by the kernel's OOM killer (-9) or an exception: keep the reason.
    tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "failed", "error": f"exit code {completed.returncode}: {tail}", "wall_seconds": wall}


def worker(request_text):
    request = json.loads(request_text)
    result = measure_configuration(**request)
    print(RESULT_MARKER + json.dumps(result), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=parse_configuration,
                        default=[parse_configuration(text) for text in DEFAULT_CONFIGS],
                        metavar="BACKBONE:B1,B2", help="backbones and batch sizes (default: %(default)s)")
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first traces the graph)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "training_throughput.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return

    results = {}
    rows = []
    for backbone, batch_sizes in args.configs:
        results[backbone] = {}
        for batch_size in batch_sizes:
            result = run_configuration(backbone, batch_size, args)
            results[backbone][str(batch_size)] = result
            label = f"TSM-{backbone} x{args.num_segments}"
            if result["status"] == "ok":
                rows.append([label, batch_size, result["step"]["median_ms"] / 1000.0, result["clips_per_s"],
                             result["rss_before_training_mib"] / 1024.0, result["peak_rss_mib"] / 1024.0, "ok"])
                print(f"{label} batch {batch_size}: {result['clips_per_s']:.2f} clips/s, "
                      f"step {result['step']['median_ms'] / 1000:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB",
                      flush=True)
            else:
                rows.append([label, batch_size, "-", "-", "-", "-", result["error"]])
                print(f"{label} batch {batch_size}: {result['error']}", flush=True)
    columns = ["model", "batch", "step s (median)", "clips/s", "RSS before training GiB", "peak RSS GiB", "status"]
    print_table(f"Training throughput, {args.size}x{args.size} x {args.num_segments} frames", columns, rows)
    args_record = {key: value for key, value in vars(args).items() if key != "worker"}
    args_record["configs"] = [f"{backbone}:{','.join(map(str, sizes))}" for backbone, sizes in args.configs]
    write_json(args.out, {"benchmark": "training_throughput", "command": command_line(),
                          "args": args_record, "step": STEP_DESCRIPTION, "columns": columns, "rows": rows,
                          "results": results})


if __name__ == "__main__":
    main()
