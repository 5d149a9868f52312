"""bfloat16 (Keras `mixed_bfloat16`) against float32: training step, inference, quickstart accuracy.

In one process, float32 and bfloat16 interleaved (so a noisy neighbour slows
both), for each backbone (TSM-MobileNetV2 and TSM-ResNet-50, 8 frames of 224,
torch layout, 400 classes):

- the training step of `bench/training_throughput.py` (`tsm_keras_step`:
  the `train/fit.py` step, `train.precision` float32 / bfloat16) at batch
  `--train-batch`;
- inference in a `tf.function` (`training=False`) at each of `--batches`,
  with `--threads` intra-op threads (default: every core);
  the bfloat16 model is the float32 one through
  `tsm_keras.models.precision.with_precision` (same weights).

The speed-up is the float32 median over the bfloat16 median. With
`--accuracy` (the default) the quickstart (`configs/quickstart.yaml`, seed 0)
is then trained and tested in float32 and in bfloat16, and the held-out top-1
of each is recorded. The quickstart takes about 6 minutes a precision on 2
idle cores, so the default run takes about 15 minutes (`--no-accuracy`:
about 3).

    python bench/bfloat16.py [--backbones mobilenet_v2 resnet50] [--batches 1 4] [--runs 5] [--no-accuracy]
"""

import argparse
import gc
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (  # noqa: E402
    REPO_ROOT,
    RESULTS_DIR,
    interleaved_timings,
    print_table,
    repo_relative,
    summarize,
    write_json,
)
from bench.report import command_line  # noqa: E402
from bench.training_throughput import tsm_keras_step  # noqa: E402

PRECISIONS = ("float32", "bfloat16")
QUICKSTART = os.path.join(REPO_ROOT, "configs", "quickstart.yaml")
STEP_DESCRIPTION = (
    "bench/training_throughput.py's tsm_keras_step (the train/fit.py step: GroupedSGD with the TSM parameter "
    "groups, weight decay, momentum, clipping, warmup schedule; default strategy), train.precision float32 and "
    "bfloat16, on one fixed random batch"
)


def inference_calls(backbone, num_segments, size, batches, num_classes):
    """`{(batch, precision): callable}`: the model in a `tf.function`, float32 and bfloat16."""
    import tensorflow as tf

    from tsm_keras import build_tsm
    from tsm_keras.models.precision import with_precision

    model = build_tsm(backbone, num_classes=num_classes, num_segments=num_segments,
                      input_shape=(size, size, 3), layout="torch")
    calls = {}
    for precision in PRECISIONS:
        forward = tf.function((lambda m: lambda clips: m(clips, training=False))(with_precision(model, precision)))
        for batch in batches:
            clips = tf.random.normal((batch, num_segments, size, size, 3), seed=batch)
            calls[(batch, precision)] = (lambda f, c: lambda: f(c).numpy())(forward, clips)
    return calls


def compare(calls, runs, warmup):
    """Interleaved timings of `{(workload, precision): callable}` -> `{workload: {precision: stats, speedup}}`."""
    timings = interleaved_timings(calls, runs=runs, warmup=warmup)
    results = {}
    for (workload, precision), seconds in timings.items():
        results.setdefault(workload, {})[precision] = summarize(seconds)
    for result in results.values():
        result["speedup"] = result["float32"]["median_ms"] / result["bfloat16"]["median_ms"]
    return results


def measure_speed(backbone, args):
    """`{"train batch B": ..., "inference batch B": ...}` of one backbone."""
    steps = {("train", precision): tsm_keras_step(backbone, args.train_batch, args.num_segments, args.size,
                                                  args.num_classes, args.threads, precision)[0]
             for precision in PRECISIONS}
    results = {f"train batch {args.train_batch}": compare(steps, args.runs, args.warmup)["train"]}
    del steps
    gc.collect()
    calls = inference_calls(backbone, args.num_segments, args.size, args.batches, args.num_classes)
    for batch, result in compare(calls, args.runs, args.warmup).items():
        results[f"inference batch {batch}"] = result
    return results


def measure_accuracy(config_path):
    """`{precision: {"top1", "pair_accuracy", "fit_seconds"}}`: the quickstart trained and tested in each."""
    from tsm_keras.training import Trainer, load_config

    results = {}
    for precision in PRECISIONS:
        config = load_config(config_path, [f"train.precision={precision}"])
        with tempfile.TemporaryDirectory(prefix=f"bfloat16_bench_{precision}_") as work_dir:
            start = time.perf_counter()
            fit = Trainer(config, work_dir, verbose=2).fit()
            seconds = time.perf_counter() - start
        metrics = fit.test_metrics
        results[precision] = {"top1": metrics["top1"], "pair_accuracy": metrics.get("pair_accuracy"),
                              "fit_seconds": seconds}
        print(f"quickstart {precision}: top-1 {metrics['top1']:.4f} ({seconds / 60:.1f} min)", flush=True)
    results["top1_difference_points"] = 100.0 * (results["bfloat16"]["top1"] - results["float32"]["top1"])
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="*", default=["mobilenet_v2", "resnet50"],
                        help="backbones timed (none: only the accuracy comparison)")
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4], help="inference batch sizes")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: every core)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per precision and workload")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (the first traces the graph)")
    parser.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True,
                        help="train and test the quickstart in both precisions (default: on)")
    parser.add_argument("--config", default=QUICKSTART, help="config of the accuracy comparison")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "bfloat16.json"))
    args = parser.parse_args(argv)

    results, rows = {}, []
    for backbone in args.backbones:
        results[backbone] = measure_speed(backbone, args)
        for workload, result in results[backbone].items():
            kind, _, batch = workload.rpartition(" batch ")
            rows.append([f"TSM-{backbone} x{args.num_segments} {args.size}", kind, int(batch),
                         result["float32"]["median_ms"], result["bfloat16"]["median_ms"], result["speedup"]])
            print(f"TSM-{backbone} {workload}: float32 {result['float32']['median_ms']:.0f} ms, bfloat16 "
                  f"{result['bfloat16']['median_ms']:.0f} ms ({result['speedup']:.2f}x)", flush=True)
        gc.collect()
    columns = ["model", "workload", "batch", "float32 ms (median)", "bfloat16 ms (median)", "bfloat16 speed-up"]
    print_table("float32 vs bfloat16 (mixed_bfloat16), interleaved", columns, rows)

    payload = {"benchmark": "bfloat16", "command": command_line(), "args": vars(args), "step": STEP_DESCRIPTION,
               "columns": columns, "rows": rows, "results": results}
    if args.accuracy:
        payload["accuracy"] = measure_accuracy(args.config)
        accuracy = payload["accuracy"]
        payload["notes"] = [
            f"Quickstart ({repo_relative(os.path.abspath(args.config))}, seed 0) held-out top-1: float32 "
            f"{accuracy['float32']['top1']:.1%}, bfloat16 {accuracy['bfloat16']['top1']:.1%} "
            f"({accuracy['top1_difference_points']:+.1f} points)."]
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
