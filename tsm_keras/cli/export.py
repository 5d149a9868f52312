"""Convert a trained TSM (`.keras`) into a LiteRT model (`.tflite`) with builtin ops only.

    tsm-export MODEL.keras --mode offline|online \\
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

`--check` compares the LiteRT model with the Keras one: a float model on one
random input (largest logit difference relative to the largest logit); a
quantized one (dynamic, int8) on real held-out clips (the test split of
`--data-config`, else of the built-in dataset), as top-1 agreement and logit
error.
"""

import collections
import os

from tsm_keras.cli import common

MODES = ("offline", "online")  # the choices of tsm_keras.export.exporter.MODES,
QUANT_MODES = ("fp32", "fp16", "dynamic", "int8")  # tflite.QUANT_MODES and tflite.IO_TYPES, spelled
IO_TYPES = ("float", "int8")  # here so that --help answers without TensorFlow (a test keeps them equal)


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-export", description, epilog=epilog)
    parser.add_argument("model", help="trained TSM saved with model.save (.keras)")
    parser.add_argument("--mode", choices=MODES, required=True, help="offline (clip) or online (per frame)")
    parser.add_argument("--quant", choices=QUANT_MODES, default="fp32")
    parser.add_argument("--io", choices=IO_TYPES, default="float",
                        help="int8 or float inputs/outputs of an int8 model (default float)")
    parser.add_argument("--calib", help="int8 calibration videos: an MMAction2 video list or a directory")
    parser.add_argument("--calib-videos", type=int, default=32, help="calibration videos (default 32)")
    parser.add_argument("--data-config", help="YAML with the model's data section (labels, mean/std, resize)")
    parser.add_argument("--labels", help="label map file (one name per line) or kinetics400 / sthv2")
    parser.add_argument("--check", action="store_true", help="compare LiteRT with Keras (see below)")
    parser.add_argument("--check-videos", type=int, default=32,
                        help="held-out clips compared by --check on a quantized model (default 32)")
    parser.add_argument("--out", required=True, help="output .tflite path")
    return parser


def _validate(args):
    if not args.model.endswith(".keras") or not os.path.isfile(args.model):
        raise common.UsageError(f"{args.model}: expected an existing .keras model file")
    if not args.out.endswith(".tflite"):
        raise common.UsageError(f"--out must end with .tflite, got {args.out}")
    if args.calib_videos < 1:
        raise common.UsageError(f"--calib-videos must be >= 1, got {args.calib_videos}")
    if args.check_videos < 1:
        raise common.UsageError(f"--check-videos must be >= 1, got {args.check_videos}")
    if args.calib is not None and args.quant != "int8":
        raise common.UsageError("--calib is only used with --quant int8")
    if args.io == "int8" and args.quant != "int8":
        raise common.UsageError(f"--io int8 needs --quant int8 (a {args.quant} model has float inputs and outputs)")


def print_summary(args, content, info):
    from tsm_keras.export import flatbuffer

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


def print_check(args, model, content, data_config):
    from tsm_keras.export import check

    if args.quant not in check.QUANTIZED:
        difference = check.random_input_difference(model, args.mode, content)
        print(f"check: max |LiteRT - Keras| / max |Keras| (logits, one random input) = {difference:.2e}")
        return
    where = f"the test split of {args.data_config}" if args.data_config else "the built-in dataset's test split"
    clips = check.held_out_clips(model, data_config, args.check_videos)
    result = check.compare_on_clips(model, args.mode, content, clips)
    print(f"check on {result['videos']} held-out clips ({where}): top-1 agreement "
          f"{result['top1_agreement']:.1%}, logit error mean {result['mean_abs_error']:.3g} "
          f"max {result['max_abs_error']:.3g} (max relative {result['max_relative_error']:.2e})")


def run(args):
    _validate(args)
    from tsm_keras.export.exporter import export_tflite, load_data_config
    from tsm_keras.models.saving import ModelFileError, load_tsm

    data_config = load_data_config(args.data_config) if args.data_config else None
    try:
        model = load_tsm(args.model)
    except ModelFileError as error:
        raise common.UsageError(error) from None
    try:
        content, info = export_tflite(model, args.out, mode=args.mode, quant=args.quant, io=args.io,
                                      data_config=data_config, calib=args.calib, calib_videos=args.calib_videos,
                                      labels=args.labels)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"{args.model}: {error}") from None
    print_summary(args, content, info)
    if args.check:
        print_check(args, model, content, data_config)


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
