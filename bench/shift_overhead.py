"""What the temporal shift costs: TSM vs its no-shift (TSN) twin, side by side.

For each backbone (ResNet-50 x8 and MobileNetV2 x8 at 224 by default) the
TSM and its TSN twin (the same network with `shift_div=0`) are timed
interleaved in one process on one clip:

- Keras in a `tf.function` (inference mode),
- Keras `model.predict` (includes Keras' per-call overhead),
- LiteRT fp32 (builtin ops, XNNPACK, `--threads` threads).

The overhead is `TSM / TSN - 1` of the medians. The goal is <= 3%. The TSM
runs as users run it: in Keras on this CPU its shifts are the native kernel
(`tsm_keras.layers.shift_kernel`), in LiteRT the depthwise form that
`tsm_keras.export` writes (one depthwise convolution over time per shift).

In the `tf.function` and LiteRT engines the TSM with the portable slicing
shift (slicing, padding, concatenation), what the native kernel and the
depthwise form replace, runs in the same rotation. In the `tf.function` engine
one more network does:

- the TSM with every shift replaced by one pass over its input (a multiply by
  a variable equal to 1, which no optimizer removes). Any shift that writes its
  output as a new tensor, however it is written, costs at least this pass, so
  `copy / TSN - 1` is the floor of a shift that is not fused into the
  convolution after it.

Each network is timed at least `--runs` times and for about `--min-seconds`
(MobileNetV2's 35-55 ms calls get some 200 runs, ResNet-50's 30).

    python bench/shift_overhead.py [--backbones resnet50 mobilenet_v2] [--runs 20] [--min-seconds 10]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import (  # noqa: E402
    RESULTS_DIR,
    interleaved_timings,
    print_table,
    summarize,
    write_json,
)
from bench.report import SHIFT_OVERHEAD_GOAL, command_line  # noqa: E402
import keras  # noqa: E402

from tsm_keras import TemporalShift, build_tsm  # noqa: E402
from tsm_keras.layers import shift_kernel  # noqa: E402


def litert_runner(model, threads):
    from ai_edge_litert.interpreter import Interpreter

    from tsm_keras.export.tflite import convert_offline

    interpreter = Interpreter(model_content=convert_offline(model, quant="fp32"), num_threads=threads)
    runner = interpreter.get_signature_runner()
    clip = np.random.default_rng(0).normal(size=model.input_shape[1:]).astype("float32")[None]
    return lambda: runner(clip=clip)


class OnePass(keras.layers.Layer):
    """`inputs * 1` with the 1 in a variable: one read and one write of the input, nothing else."""

    def build(self, input_shape):
        self.one = self.add_weight(shape=(), initializer="ones", trainable=False, name="one")

    def call(self, inputs):
        return inputs * self.one

    def compute_output_shape(self, input_shape):
        return input_shape


def with_one_pass_shifts(model):
    """`model` (shared layers) with every `TemporalShift` replaced by a `OnePass`."""
    return keras.models.clone_model(
        model, clone_function=lambda layer: OnePass() if isinstance(layer, TemporalShift) else layer
    )


def traced_call(model, clip):
    """`model(clip)` in inference mode in a `tf.function` traced now, under the caller's shift scope."""
    function = tf.function(lambda frames: model(frames, training=False))
    function.get_concrete_function(clip)
    return lambda: function(clip).numpy()


def measure(backbone, num_segments, size, runs, threads, engines, min_seconds=0.0):
    kwargs = dict(num_classes=400, num_segments=num_segments, input_shape=(size, size, 3), layout="torch")
    models = {"TSM": build_tsm(backbone, **kwargs), "TSN": build_tsm(backbone, shift=False, **kwargs)}
    models["TSN"].set_weights(models["TSM"].get_weights())
    clip = tf.random.normal((1, num_segments, size, size, 3), seed=0)
    results = {}
    for engine in engines:
        if engine == "tf.function":
            networks = {**models, "copy": with_one_pass_shifts(models["TSM"])}
            calls = {name: traced_call(model, clip) for name, model in networks.items()}
            with shift_kernel.portable():
                calls["portable"] = traced_call(models["TSM"], clip)
        elif engine == "predict":
            calls = {name: (lambda m: lambda: m.predict(clip, verbose=0))(model) for name, model in models.items()}
        else:
            calls = {name: litert_runner(model, threads) for name, model in models.items()}
            with shift_kernel.portable("slices"):
                calls["portable"] = litert_runner(models["TSM"], threads)
        timings = interleaved_timings(calls, runs=runs, min_seconds=min_seconds)
        stats = {name: summarize(seconds) for name, seconds in timings.items()}
        overhead = stats["TSM"]["median_ms"] / stats["TSN"]["median_ms"] - 1.0
        # Judged at the 0.1% shown, as docs/benchmarks.md's verdicts are (bench/report.py).
        results[engine] = {**stats, "overhead": overhead, "goal_met": round(overhead, 3) <= SHIFT_OVERHEAD_GOAL}
        extra = ""
        if "portable" in stats:
            results[engine]["portable_overhead"] = stats["portable"]["median_ms"] / stats["TSN"]["median_ms"] - 1.0
            extra += f", portable shift {results[engine]['portable_overhead']:+.1%}"
        if "copy" in stats:
            results[engine]["copy_floor"] = stats["copy"]["median_ms"] / stats["TSN"]["median_ms"] - 1.0
            extra += f", one pass instead of each shift {results[engine]['copy_floor']:+.1%}"
        print(f"{backbone} x{num_segments} {engine}: TSM {stats['TSM']['median_ms']:.1f} ms, "
              f"TSN {stats['TSN']['median_ms']:.1f} ms, overhead {overhead:+.1%}{extra}", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "mobilenet_v2"])
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20, help="timed calls per network, at least")
    parser.add_argument("--min-seconds", type=float, default=10.0,
                        help="time every network for about this long at least (more runs for the fast ones)")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads")
    parser.add_argument("--engines", nargs="+", default=["tf.function", "predict", "litert"],
                        choices=["tf.function", "predict", "litert"])
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "shift_overhead.json"))
    args = parser.parse_args(argv)

    results = {
        backbone: measure(backbone, args.num_segments, args.size, args.runs, args.threads, args.engines,
                          args.min_seconds)
        for backbone in args.backbones
    }
    rows = [
        [f"{backbone} x{args.num_segments}", engine, r["TSN"]["median_ms"], r["TSM"]["median_ms"],
         f"{r['overhead']:+.1%}", "yes" if r["goal_met"] else "no",
         f"{r['portable_overhead']:+.1%}" if "portable_overhead" in r else "-",
         f"{r['copy_floor']:+.1%}" if "copy_floor" in r else "-"]
        for backbone, engines in results.items()
        for engine, r in engines.items()
    ]
    columns = ["model", "engine", "TSN ms (median)", "TSM ms (median)", "shift overhead", "<= 3%",
               "portable shift (slices)", "one pass instead of each shift (floor)"]
    print_table(f"Temporal shift overhead, {args.size}x{args.size}, 1 clip", columns, rows)
    write_json(args.out, {"benchmark": "shift_overhead", "command": command_line(), "args": vars(args),
                          "columns": columns, "rows": rows, "results": results})


if __name__ == "__main__":
    main()
