"""Evaluate a trained TSM with its config's test protocol.

    python train/test.py --config configs/quickstart.yaml \
        --checkpoint work_dirs/quickstart/final.weights.h5 --dump results.pkl

Prints top-1, top-5 and mean class accuracy over the config's test views
(clips x crops, probabilities or logits averaged as `test.average` says),
writes `metrics.json`, `confusion_matrix.png` and `per_class.csv` to
`--out-dir`, and with `--dump FILE` the per-video scores and labels as
`FILE.pkl` (MMAction2-style list of dicts) and `FILE.json` (see
`tsm_keras.training.evaluation` for the format).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config the model was trained with")
    parser.add_argument("--checkpoint", required=True,
                        help="a .weights.h5 file, a .keras model, a checkpoints/step-* directory or a work dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set data.test_crop=ten")
    parser.add_argument("--split", choices=("train", "val", "test"), help="default: the config's test.split")
    parser.add_argument("--dump", metavar="FILE", help="write per-video scores to FILE.pkl and FILE.json")
    parser.add_argument("--out-dir", help="report directory (default: <checkpoint's dir>/test)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tsm_keras.training.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not os.path.exists(args.checkpoint):
        print(f"error: --checkpoint {args.checkpoint}: no such file or directory", file=sys.stderr)
        return 2
    from tsm_keras.training.testing import load_test_model, run_test

    model = load_test_model(config, args.checkpoint)
    checkpoint = os.path.normpath(args.checkpoint)
    base = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    if os.path.basename(checkpoint).startswith("step-"):  # work_dir/checkpoints/step-*
        base = os.path.dirname(os.path.dirname(checkpoint))
    out_dir = args.out_dir or os.path.join(base, "test")
    run_test(config, model, out_dir, split=args.split, dump=args.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
