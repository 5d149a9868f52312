"""Top-5 classes of a video with a trained TSM (`.keras`) or an exported model (`.tflite`).

    tsm-predict MODEL.keras|MODEL.tflite VIDEO \\
        [--data-config CONFIG.yaml] [--labels FILE_OR_NAME] [--top 5] [--threads 2] [--precision bfloat16]

Frames go through the project's data pipeline (test sampling, short side
resize, crops, normalisation); the protocol is the data config's or, without
one, a single centre view. Scores are softmax probabilities averaged over the
views. A `.tflite` model brings its labels and preprocessing in its
`FILE.tflite.json` sidecar; an online one is fed the frames one by one with
carried states (see `tsm_keras.inference.predict`).
"""

import os

from tsm_keras.cli import common


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-predict", description, epilog=epilog)
    parser.add_argument("model", help="a TSM .keras file or an exported .tflite (with its .json sidecar)")
    parser.add_argument("video", help="video file")
    parser.add_argument("--data-config", help="YAML with the data section: test protocol, mean/std, labels")
    parser.add_argument("--labels", help="label map file or kinetics400 / sthv2 (default: metadata / config)")
    parser.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT CPU threads")
    common.add_precision_argument(parser, "float32; .keras models only")
    return parser


def run(args):
    for path, what in ((args.model, "a model file"), (args.video, "a video file")):
        if os.path.isdir(path):
            raise common.UsageError(f"{path}: a directory, expected {what}")
        if not os.path.isfile(path):
            raise common.UsageError(f"{path}: no such file")
    if args.top < 1:
        raise common.UsageError(f"--top must be >= 1, got {args.top}")
    if args.precision == "bfloat16" and not args.model.endswith(".keras"):
        raise common.UsageError("--precision bfloat16 is for .keras models; a .tflite model computes in the "
                                "precision it was exported in (tsm-export --quant)")
    from tsm_keras.export.exporter import load_data_config
    from tsm_keras.inference.predict import predict

    data_config = load_data_config(args.data_config) if args.data_config else None
    ranking, num_views = predict(args.model, args.video, data_config, args.labels, args.top, args.threads,
                                 args.precision or "float32")
    print(f"{args.video} ({num_views} view{'s' if num_views > 1 else ''}, {os.path.basename(args.model)}):")
    for rank, (name, probability) in enumerate(ranking, start=1):
        print(f"  {rank}. {name:<32s} {probability:.4f}")


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
