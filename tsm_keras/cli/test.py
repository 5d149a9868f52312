"""Evaluate a trained TSM with its config's test protocol.

    tsm-test --config configs/quickstart.yaml \
        --checkpoint work_dirs/quickstart/final.weights.h5 --dump results.pkl

Prints which split (and list) it tests, then top-1, top-5 and mean class
accuracy over the config's test views (clips x crops, probabilities or
logits averaged as `test.average` says); writes `metrics.json`,
`confusion_matrix.png` and `per_class.csv` to `--out-dir`, and with
`--dump FILE` the per-video scores and labels as `FILE.pkl` (MMAction2-style
list of dicts) and `FILE.json` (see `tsm_keras.training.evaluation`).

The default `--out-dir` is `<run>/test`, the folder the training run wrote
its own test report to, only when the same split and list are tested;
another split or list (`--split val`, `--set data.test_list=...`) goes to
`<run>/test_<split>` or `<run>/test_<list name>`.
"""

import os

from tsm_keras.cli import common


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-test", description, epilog=epilog)
    parser.add_argument("--config", required=True, help="YAML config the model was trained with")
    parser.add_argument("--checkpoint", required=True,
                        help="a .weights.h5 file, a .keras model, a checkpoints/step-* directory or a work dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set data.test_crop=ten")
    parser.add_argument("--split", choices=("train", "val", "test"), help="default: the config's test.split")
    parser.add_argument("--dump", metavar="FILE", help="write per-video scores to FILE.pkl and FILE.json")
    parser.add_argument("--out-dir", help="report directory (default: see below)")
    common.add_precision_argument(parser, "the config's train.precision")
    return parser


def run_directory(checkpoint):
    """The training run a checkpoint belongs to (its work dir, or the file's folder)."""
    checkpoint = os.path.normpath(checkpoint)
    base = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    if os.path.basename(checkpoint).startswith("step-"):  # work_dir/checkpoints/step-*
        base = os.path.dirname(os.path.dirname(checkpoint))
    return base


def report_name(trained, tested, split):
    """`test` for what the training run tested, else a name for the split / list tested."""
    trained_list = trained.data.list_for(trained.test.split)
    tested_list = tested.data.list_for(split)
    if tested_list != trained_list and tested_list is not None:
        return "test_" + os.path.splitext(os.path.basename(os.path.normpath(tested_list)))[0]
    if split != trained.test.split or tested.data.source != trained.data.source:
        return f"test_{split}"
    return "test"


def run(args):
    from tsm_keras.training.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
        trained = load_config(args.config)
    except ConfigError as error:
        raise common.UsageError(error) from error
    if not os.path.exists(args.checkpoint):
        raise common.UsageError(f"--checkpoint {args.checkpoint}: no such file or directory")
    from tsm_keras.training.testing import load_test_model, run_test

    split = args.split or config.test.split
    out_dir = args.out_dir or os.path.join(run_directory(args.checkpoint), report_name(trained, config, split))
    model = load_test_model(config, args.checkpoint, args.precision)
    run_test(config, model, out_dir, split=split, dump=args.dump)


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
