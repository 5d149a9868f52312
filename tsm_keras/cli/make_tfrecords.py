"""Convert an MMAction2 annotation list to TFRecord shards.

    tsm-make-tfrecords LIST ROOT OUT --shards N \\
        [--frames] [--label-map kinetics400] [--resize-short 256] [--quality 90]

`LIST` is a video list (`path label`) or, with `--frames`, a rawframe list
(`frame_dir total_frames label`); `ROOT` prefixes its paths; `OUT` is the
output directory (`shard-*.tfrecord` + `index.json`), to be used as
`train_list` / `val_list` with `source: tfrecord`. Broken videos are skipped
with one warning each and counted in the closing summary (`--on-error raise`
stops at the first).
"""

import logging

from tsm_keras.cli import common


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-make-tfrecords", description, epilog=epilog)
    parser.add_argument("list", help="MMAction2 annotation list")
    parser.add_argument("root", help="data root joined to the list's paths")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--shards", type=int, default=1, help="number of shard files (default 1)")
    parser.add_argument("--frames", action="store_true", help="LIST is a rawframe list of JPEG folders")
    parser.add_argument("--filename-tmpl", default="img_{:05d}.jpg", help="frame file template (--frames)")
    parser.add_argument("--start-index", type=int, default=1, help="first frame number (--frames)")
    parser.add_argument("--label-map", default=None, help="label map file or kinetics400 / sthv2")
    parser.add_argument("--resize-short", type=int, default=None, help="resize the short side before encoding")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--on-error", choices=("skip", "raise"), default="skip")
    return parser


def run(args):
    if args.shards < 1:
        raise common.UsageError(f"--shards must be >= 1, got {args.shards}")
    if not 1 <= args.quality <= 100:
        raise common.UsageError(f"--quality must be in [1, 100], got {args.quality}")
    if args.resize_short is not None and args.resize_short < 1:
        raise common.UsageError(f"--resize-short must be >= 1, got {args.resize_short}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from tsm_keras.data.tfrecords import write_tfrecords

    index = write_tfrecords(
        args.list, args.root, args.out, num_shards=args.shards, kind="frames" if args.frames else "video",
        label_map=args.label_map, resize_short=args.resize_short, quality=args.quality,
        filename_tmpl=args.filename_tmpl, start_index=args.start_index, on_error=args.on_error)
    skipped = sum(index["skipped"].values())
    print(f"wrote {index['num_examples']} videos to {len(index['shards'])} shards in {args.out}"
          f" ({skipped} skipped)")


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
