"""Offline inference clips/s of TSM-R50 x8 as a fraction of this machine's peak FLOP/s.

In one process, interleaved (so a noisy neighbour slows all of them):

- the peak: a float32 `N x N` by `N x N` matmul in a `tf.function`
  (2 N^3 FLOP per call; N = 4096 by default);
- the model: TSM-ResNet-50, 8 segments at 224 (torch layout, 400 classes), in
  a `tf.function` in inference mode, at batch 1 and at a larger batch, in its
  deploy form (`inference_form`: normalizations folded into the convs, the
  form `tsm-test` and `tsm-predict` run) and as built (`--as-built`, the
  train-time form, for comparison);
- the reference: the same network in PyTorch (the MMAction2-identical
  `tests/torch_reference.py` network with a linear head, eval mode,
  `torch.no_grad`, `torch.set_num_threads(--threads)`), at the same batches
  (`--reference none` leaves it out).

Both use `--threads` intra-op threads (default: every core). A clip costs
`2 x model_complexity(model)["flops"]` FLOP (multiply-accumulates of the
backbone, 32.9 G for R50 x8 at 224). The fraction of peak is the model's
achieved FLOP/s over the matmul's, both from the medians of the same run.
Goals: >= 80% of the peak, and >= 1.6x the reference's clips/s, at every batch.
PyTorch's OpenMP threads spin for a while after each call; a pause of
`--pause` seconds after every call keeps them from slowing the next one.

    python bench/inference_efficiency.py [--batches 1 4] [--runs 5] [--matmul-size 4096]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RESULTS_DIR, interleaved_timings, print_table, summarize, write_json  # noqa: E402
from bench.report import command_line  # noqa: E402


def matmul_call(size):
    """A zero-argument callable running one `size`^2 float32 matmul; and its FLOP."""
    import tensorflow as tf

    left = tf.random.normal((size, size), seed=0)
    right = tf.random.normal((size, size), seed=1)
    # The sum forces the product and only adds size^2 FLOP (1/(2 size) of the matmul).
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(left, right)))
    return (lambda: product().numpy()), 2 * size**3


def model_calls(backbone, num_segments, size, batches, num_classes, as_built=True):
    """`{"batch B": callable}` for the model in a `tf.function`; and the FLOP of one clip.

    `"batch B"` runs the deploy form; with `as_built`, `"as built batch B"`
    runs the train-time form beside it.
    """
    import tensorflow as tf

    from tsm_keras import build_tsm, model_complexity
    from tsm_keras.models.reparameterize import inference_form

    model = build_tsm(backbone, num_classes=num_classes, num_segments=num_segments,
                      input_shape=(size, size, 3), layout="torch")
    clip_flop = 2 * model_complexity(model)["flops"]
    forms = {"": inference_form(model), **({"as built ": model} if as_built else {})}
    calls = {}
    for prefix, form in forms.items():
        forward = tf.function(lambda clips, form=form: form(clips, training=False))
        for batch in batches:
            clips = tf.random.normal((batch, num_segments, size, size, 3), seed=batch)
            calls[f"{prefix}batch {batch}"] = (lambda f, c: lambda: f(c).numpy())(forward, clips)
    return calls, clip_flop


def reference_calls(backbone, num_segments, size, batches, num_classes, threads):
    """`{"batch B": callable}` for the PyTorch reference network in eval mode."""
    import torch

    from bench.training_throughput import reference_logits, reference_network

    network = reference_network(backbone, num_segments, num_classes, threads).eval()

    def forward(clips):
        with torch.no_grad():
            return reference_logits(network, clips).numpy()

    return {
        f"batch {batch}": (lambda c: lambda: forward(c))(torch.randn(batch, num_segments, 3, size, size))
        for batch in batches
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reference", choices=["pytorch", "none"], default="pytorch",
                        help="also time the PyTorch reference network (needs the torch extra)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds of rest after every timed call")
    parser.add_argument("--as-built", choices=["yes", "no"], default="yes",
                        help="also time the train-time form (the deploy form is always timed)")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "inference_efficiency.json"))
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    peak_call, matmul_flop = matmul_call(args.matmul_size)
    calls, clip_flop = model_calls(args.backbone, args.num_segments, args.size, args.batches, args.num_classes,
                                   as_built=args.as_built == "yes")
    calls = {"matmul": peak_call, **calls}
    if args.reference == "pytorch":
        reference = reference_calls(args.backbone, args.num_segments, args.size, args.batches, args.num_classes,
                                    args.threads)
        calls.update({f"pytorch {name}": call for name, call in reference.items()})
    timings = interleaved_timings(calls, runs=args.runs, warmup=args.warmup, pause=args.pause)
    stats = {name: summarize(seconds) for name, seconds in timings.items()}

    peak = matmul_flop / (stats["matmul"]["median_ms"] / 1000.0)
    peak_best = matmul_flop / (stats["matmul"]["min_ms"] / 1000.0)
    results = {"matmul": {**stats["matmul"], "flop": matmul_flop, "flop_per_s": peak, "best_flop_per_s": peak_best}}
    model_label = f"TSM-{args.backbone} x{args.num_segments} {args.size}"
    rows = [[f"matmul {args.matmul_size}^2 float32 (peak)", "-", stats["matmul"]["median_ms"], "-",
             peak / 1e9, 1.0, "-"]]
    def throughput(name, batch):
        """`stats[name]` with its clips/s, FLOP/s and fraction of the peak."""
        clips_per_s = batch / (stats[name]["median_ms"] / 1000.0)
        return {**stats[name], "batch": batch, "clips_per_s": clips_per_s, "flop_per_s": clips_per_s * clip_flop,
                "fraction_of_peak": clips_per_s * clip_flop / peak}

    def row(label, result, speedup="-"):
        return [label, result["batch"], result["median_ms"], result["clips_per_s"], result["flop_per_s"] / 1e9,
                result["fraction_of_peak"], speedup]

    for batch in args.batches:
        name = f"batch {batch}"
        deploy = results[name] = throughput(name, batch)
        rows.append(row(f"{model_label} tf.function, deploy form", deploy))
        if f"as built {name}" in stats:
            built = results[f"as built {name}"] = throughput(f"as built {name}", batch)
            deploy["speedup_over_as_built"] = deploy["clips_per_s"] / built["clips_per_s"]
            rows.append(row(f"{model_label} tf.function, as built", built))
        print(f"{model_label} batch {batch}: {deploy['clips_per_s']:.3f} clips/s = "
              f"{deploy['flop_per_s'] / 1e9:.1f} GFLOP/s, {deploy['fraction_of_peak']:.1%} of the matmul's "
              f"{peak / 1e9:.1f} GFLOP/s", flush=True)
        if f"pytorch {name}" in stats:
            reference = results[f"pytorch {name}"] = throughput(f"pytorch {name}", batch)
            speedup = deploy["speedup_over_reference"] = deploy["clips_per_s"] / reference["clips_per_s"]
            rows.append(row(f"PyTorch reference {args.size} eval", reference, f"{speedup:.2f}x"))
            print(f"PyTorch reference batch {batch}: {reference['clips_per_s']:.3f} clips/s; tsm_keras "
                  f"{speedup:.2f}x", flush=True)
    columns = ["workload", "batch", "ms (median)", "clips/s", "GFLOP/s", "fraction of peak", "tsm_keras / PyTorch"]
    print_table(f"Inference efficiency ({args.threads} threads; a clip = {clip_flop / 1e9:.1f} GFLOP)", columns, rows)
    write_json(args.out, {"benchmark": "inference_efficiency", "command": command_line(), "args": vars(args),
                          "clip_flop": clip_flop, "columns": columns, "rows": rows, "results": results})


if __name__ == "__main__":
    main()
