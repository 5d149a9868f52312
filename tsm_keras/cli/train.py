"""Train a TSM from a YAML config (and evaluate it at the end).

    tsm-train --config configs/quickstart.yaml
    tsm-train --config configs/tsm_r50_1x1x8_50e_kinetics400.yaml \
        --set data.data_root=/data/k400 --strategy mirrored --auto-scale-lr
    tsm-train --config C --work-dir W --resume          # continue W
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 0}}' \
        tsm-train --config C --strategy multi_worker --work-dir /shared/W

The config is validated before anything else happens; see the README's
"Training" section for the config keys and the work dir layout. Progress is
a bar on a terminal and one line per epoch otherwise (or with --quiet).
"""

import os

from tsm_keras.cli import common


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-train", description, epilog=epilog)
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (YAML syntax; repeatable), e.g. --set optimizer.lr=0.01")
    parser.add_argument("--work-dir", help="output directory (default: work_dirs/<config name>)")
    parser.add_argument("--strategy", default="default", choices=("default", "mirrored", "multi_worker"),
                        help="one device; all local GPUs (MirroredStrategy); several hosts from TF_CONFIG")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the newest checkpoint of the work dir (or the given one)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale optimizer.lr by the global batch / train.base_batch_size")
    parser.add_argument("--seed", type=int, help="sets train.seed")
    parser.add_argument("--deterministic", action="store_true", help="sets train.deterministic (op determinism)")
    parser.add_argument("--no-test", action="store_true", help="skip the test-split evaluation at the end")
    parser.add_argument("--cpu-devices", type=int, default=0, metavar="N",
                        help="split the CPU into N logical devices (runs --strategy mirrored without GPUs)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars: one line per epoch, with the summary, validation and test lines")
    return parser


def run(args):
    from tsm_keras.training.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        raise common.UsageError(error) from error
    work_dir = args.work_dir or os.path.join("work_dirs", os.path.splitext(os.path.basename(args.config))[0])

    from tsm_keras.training import distribute

    if args.cpu_devices:
        distribute.split_cpu(args.cpu_devices)
    from tsm_keras.training.trainer import Trainer

    try:
        trainer = Trainer(config, work_dir, strategy=args.strategy, auto_scale_lr=args.auto_scale_lr,
                          verbose=2 if args.quiet else 1, test_at_end=not args.no_test)
        trainer.fit(resume=args.resume)
    except ConfigError as error:
        raise common.UsageError(error) from error
    except FileExistsError as error:
        raise common.UsageError(f"{error} (here: --resume, or another --work-dir)") from error


def main(argv=None):
    return common.main(build_parser(), run, argv)
if __name__ == "__main__":
    raise SystemExit(main())
