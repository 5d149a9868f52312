"""Per-frame LiteRT latency of the online TSM-MobileNetV2 vs a plain MobileNetV2, side by side.

Both models are built at the same size from the same weights: the online
TSM (uni-directional, 10 state inputs/outputs) and the same network without
shifts (`shift_div=0`: a stateless per-frame MobileNetV2 with the same
classifier). Each is converted with `tsm_keras.export.tflite` (builtin ops
only) in every quantization mode; int8 models are calibrated on the same
clips of the built-in synthetic dataset (the online one frame by frame with
carried states). Latency is one signature-runner call per frame (inputs in,
invoke, outputs out; the states of the TSM are fed back as they came out),
through ai-edge-litert with its default XNNPACK delegate, `--runs` timed
calls after `--warmup`, the two models interleaved call by call so that a
noisy neighbour slows both. Weights are random (no pretrained weights can be
downloaded here); latency does not depend on them.

    python bench/online_latency.py [--size 224] [--threads 1 2] [--runs 100]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import RESULTS_DIR, interleaved_timings, print_table, summarize, write_json  # noqa: E402
from tsm_keras import build_tsm  # noqa: E402
from tsm_keras.export import build_online, calibration, tflite  # noqa: E402


def convert_all(online, quants, calibration_clips):
    models = {}
    for quant in quants:
        representative = None
        if quant == "int8":
            representative = calibration.representative_dataset(
                calibration.online_samples(online, calibration_clips)
            )
        models[quant] = tflite.convert_online(online, quant, representative, io="int8" if quant == "int8" else "float")
        print(f"converted {online.name} {quant}: {len(models[quant]) / 1e6:.2f} MB", flush=True)
    return models


def frame_call(model_content, threads, seed=0):
    """A zero-argument callable running one frame; states are fed back."""
    from ai_edge_litert.interpreter import Interpreter

    from tsm_keras.export.runtime import LiteRTModel

    model = LiteRTModel(Interpreter(model_content=model_content, num_threads=threads))
    shape = model.input_details["image"]["shape"]
    image = model.quantize("image", np.random.default_rng(seed).normal(size=shape))
    state = {"values": model.zero_states()}

    def call():
        outputs = model.run({"image": image, **state["values"]})
        state["values"] = {name: outputs[name] for name in state["values"]}

    return call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=27, help="classifier size (27: Jester, the demo's)")
    parser.add_argument("--quants", nargs="+", default=list(tflite.QUANT_MODES), choices=tflite.QUANT_MODES)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=100, help="timed frames per model (>= 50)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calib-videos", type=int, default=8, help="synthetic clips for int8 calibration")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "online_latency.json"))
    args = parser.parse_args(argv)
    if args.runs < 50:
        parser.error("--runs must be >= 50")

    size = (args.size, args.size, 3)
    offline = build_tsm("mobilenet_v2", num_classes=args.num_classes, num_segments=8,
                        direction="unidirectional", input_shape=size, layout="torch")
    plain_offline = build_tsm("mobilenet_v2", num_classes=args.num_classes, num_segments=8, shift_div=0,
                              input_shape=size, layout="torch")
    plain_offline.set_weights(offline.get_weights())
    online, plain = build_online(offline), build_online(plain_offline)
    config, split = calibration.calibration_config(None, (args.size, args.size), 8)
    config = config.replace(synthetic={**config.to_dict()["synthetic"], "frame_size": args.size})
    clips = list(calibration.calibration_clips(config, split, args.calib_videos))

    variants = {"TSM online": convert_all(online, args.quants, clips),
                "MobileNetV2": convert_all(plain, args.quants, clips)}
    results, rows = {}, []
    for quant in args.quants:
        results[quant] = {name: {"size_mb": len(models[quant]) / 1e6} for name, models in variants.items()}
        for threads in args.threads:
            calls = {name: frame_call(models[quant], threads) for name, models in variants.items()}
            timings = interleaved_timings(calls, runs=args.runs, warmup=args.warmup)
            for name, seconds in timings.items():
                results[quant][name][f"threads_{threads}"] = summarize(seconds)
            ratio = (results[quant]["TSM online"][f"threads_{threads}"]["median_ms"]
                     / results[quant]["MobileNetV2"][f"threads_{threads}"]["median_ms"])
            results[quant][f"ratio_threads_{threads}"] = ratio
            print(f"{quant} {threads} thread(s): TSM/MobileNetV2 = {ratio:.3f}", flush=True)
        for name in variants:
            row = [name, quant, f"{results[quant][name]['size_mb']:.2f}"]
            for threads in args.threads:
                stats = results[quant][name][f"threads_{threads}"]
                row += [stats["median_ms"], stats["p90_ms"]]
            rows.append(row)
        size_ratio = results[quant]["TSM online"]["size_mb"] / results[quant]["MobileNetV2"]["size_mb"]
        rows.append(["TSM / MobileNetV2", quant, f"{size_ratio:.4f}x"]
                    + sum([[f"{results[quant][f'ratio_threads_{threads}']:.3f}x", ""] for threads in args.threads],
                          []))
    columns = ["model", "quant", "size MB"]
    for threads in args.threads:
        columns += [f"{threads}T median ms", f"{threads}T p90 ms"]
    print_table(f"Online per-frame latency at {args.size}x{args.size} (ai-edge-litert, XNNPACK, "
                f"{args.runs} runs)", columns, rows)
    write_json(args.out, {"benchmark": "online_latency", "args": vars(args), "columns": columns, "rows": rows,
                          "results": results,
                          "states": {name: list(shape) for name, shape in online.state_shapes.items()}})


if __name__ == "__main__":
    main()
