"""Write the built-in temporal dataset as mp4 files, list files and a label map.

    tsm-make-videos OUT_DIR [--config configs/quickstart_online.yaml] [--splits test]

The videos are the ones `source: synthetic` renders in memory (the same
`data.synthetic` settings give the same videos, see `tsm_keras.data.synthetic`),
written as `OUT_DIR/{split}/{class}_{index:05d}.mp4` with
`OUT_DIR/{split}_list.txt` (`split/name.mp4 label` lines) and
`OUT_DIR/label_map.txt`, so the tools that read real files (training on a
video list, `tsm-predict`, `tsm-stream`) have something to read.
It prints the `--set` overrides that train a config on the written files.
"""

from tsm_keras.cli import common

SPLITS = ("train", "val", "test")


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-make-videos", description, epilog=epilog)
    parser.add_argument("out_dir", help="output directory (created)")
    parser.add_argument("--config", help="training config whose data.synthetic settings to use "
                                         "(default: the built-in defaults, as configs/quickstart.yaml)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to write")
    parser.add_argument("--fps", type=int, default=12, help="frame rate of the mp4 files (default 12)")
    parser.add_argument("--codec", default="libx264", help="PyAV encoder (default libx264)")
    return parser


def run(args):
    if args.fps < 1:
        raise common.UsageError(f"--fps must be >= 1, got {args.fps}")
    from tsm_keras.data import synthetic
    from tsm_keras.training.config import ConfigError, load_config

    try:
        settings = load_config(args.config).data.synthetic if args.config else None
    except ConfigError as error:
        raise common.UsageError(error) from error
    try:
        paths = synthetic.write_videos(args.out_dir, settings, splits=tuple(args.splits), codec=args.codec,
                                       fps=args.fps)
    except (OSError, ValueError, ImportError) as error:
        raise RuntimeError(f"{args.out_dir}: {error}") from error
    for split in args.splits:
        with open(paths[f"{split}_list"], encoding="utf-8") as handle:
            count = sum(1 for _ in handle)
        print(f"{split}: {count} videos, list {paths[f'{split}_list']}")
    print(f"label map: {paths['label_map']}")
    sets = " ".join([
        "--set data.source=video",
        f"--set data.data_root={paths['data_root']}",
        f"--set data.label_map={paths['label_map']}",
        *[f"--set data.{split}_list={paths[f'{split}_list']}" for split in args.splits],
    ])
    print(f"train on the files: tsm-train --config CONFIG {sets}")


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
