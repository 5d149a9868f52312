"""Converts a trained TSM (`.keras`) into a LiteRT model (`.tflite`) with builtin ops only.

Usage:

    python convert/to_tflite.py MODEL.keras --mode offline|online \\
        --quant fp32|fp16|dynamic|int8 [--io float|int8] \\
        [--calib LIST_OR_DIR] [--calib-videos 32] \\
        [--data-config CONFIG.yaml] [--labels FILE_OR_NAME] [--check] \\
        --out FILE.tflite

Offline: one signature `serving_default`, input `clip` `(1, T, H, W, 3)`,
output `logits`. Online (uni-directional models only): input `image`
`(1, H, W, 3)` plus one `state_block{i}_shift` per shifted block, outputs
`logits` plus the next states under the same `state_*` names (feed them back).
`--quant int8` calibrates on `--calib` (an MMAction2 video list or a
directory of videos) or, by default, on the val split of `--data-config`
(the built-in synthetic dataset when none is given); online models are
calibrated frame by frame with carried states. `FILE.tflite.json` (labels,
preprocessing, shift settings, signature, state names) is written next to
the model. A graph that would need Flex / select-TF ops is refused, naming
the ops.
"""

import argparse
import collections
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tsm_keras.export import flatbuffer, tflite  # noqa: E402
from tsm_keras.export.exporter import MODES, export_tflite, load_data_config  # noqa: E402
from tsm_keras.models.saving import ModelFileError, load_tsm  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="trained TSM saved with model.save (.keras)")
    parser.add_argument("--mode", choices=MODES, required=True, help="offline (clip) or online (per frame)")
    parser.add_argument("--quant", choices=tflite.QUANT_MODES, default="fp32")
    parser.add_argument("--io", choices=tflite.IO_TYPES, default="float",
                        help="int8 or float inputs/outputs of an int8 model (default float)")
    parser.add_argument("--calib", help="int8 calibration videos: an MMAction2 video list or a directory")
    parser.add_argument("--calib-videos", type=int, default=32, help="calibration videos (default 32)")
    parser.add_argument("--data-config", help="YAML with the model's data section (labels, mean/std, resize)")
    parser.add_argument("--labels", help="label map file (one name per line) or kinetics400 / sthv2")
    parser.add_argument("--check", action="store_true",
                        help="compare LiteRT with Keras on one random input and print the difference")
    parser.add_argument("--out", required=True, help="output .tflite path")
    return parser.parse_args(argv)


def check(model, mode, model_content, io, seed=0):
    """max |LiteRT - Keras| / max |Keras| of the logits on one random input."""
    from ai_edge_litert.interpreter import Interpreter

    from tsm_keras.export import build_online
    from tsm_keras.export.runtime import LiteRTModel

    rng = np.random.default_rng(seed)
    runner = LiteRTModel(Interpreter(model_content=model_content))
    if mode == "online":
        online = build_online(model)
        image = rng.normal(size=online.input["image"].shape).astype("float32")
        states = online.init_states()
        expected = np.asarray(online({"image": image, **states})["logits"])
        actual = runner({"image": image, **states})["logits"]
    else:
        clip = rng.normal(size=(1,) + tuple(model.input_shape[1:])).astype("float32")
        expected = np.asarray(model(clip, training=False))
        actual = runner({"clip": clip})["logits"]
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def main(argv=None):
    args = parse_args(argv)
    if not args.model.endswith(".keras") or not os.path.isfile(args.model):
        raise SystemExit(f"{args.model}: expected an existing .keras model file")
    if args.calib_videos < 1:
        raise SystemExit(f"--calib-videos must be >= 1, got {args.calib_videos}")
    if args.calib is not None and args.quant != "int8":
        raise SystemExit("--calib is only used with --quant int8")
    data_config = load_data_config(args.data_config) if args.data_config else None
    try:
        model = load_tsm(args.model)
    except ModelFileError as error:
        raise SystemExit(str(error)) from None
    try:
        content, info = export_tflite(
            model,
            args.out,
            mode=args.mode,
            quant=args.quant,
            io=args.io,
            data_config=data_config,
            calib=args.calib,
            calib_videos=args.calib_videos,
            labels=args.labels,
        )
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"{args.model}: {error}") from None
    ops = collections.Counter(flatbuffer.list_ops(content))
    print(f"{args.model} -> {args.out} ({len(content) / 1e6:.2f} MB, {args.mode}, {args.quant}, io {args.io})")
    print("ops: " + ", ".join(f"{name} x{count}" for name, count in sorted(ops.items())))
    for kind, entries in (("input", info.inputs), ("output", info.outputs)):
        for entry in entries:
            quant = f" scale={entry['scale']:.4g} zero_point={entry['zero_point']}" if entry["scale"] else ""
            print(f"  {kind} {entry['name']}: {entry['dtype']}{list(entry['shape'])}{quant}")
    if info.calibration:
        print(f"calibrated on {info.calibration['samples']} samples from {info.calibration['source']}")
    print(f"metadata: {args.out}.json")
    if args.check:
        difference = check(model, args.mode, content, args.io)
        print(f"max |LiteRT - Keras| / max |Keras| (logits, one random input) = {difference:.2e}")
    return content


if __name__ == "__main__":
    main(sys.argv[1:])
