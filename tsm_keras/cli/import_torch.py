"""Import a PyTorch TSM checkpoint (MMAction2, mit-han-lab) into a Keras `.keras` model.

    tsm-import CKPT --out MODEL.keras \\
        [--source auto|mmaction2|mit|mit_online] [--arch BACKBONE] [--num-segments T] \\
        [--shift-div 8] [--non-local MODE] [--direction DIRECTION] [--input-size 224] \\
        [--shift-segments 8]
    tsm-import --preset tsm_r50_1x1x8_k400 --out MODEL.keras [--checkpoint CKPT]

`--preset NAME` takes a published checkpoint by name (`tsm_keras.list_presets()`):
downloaded into the Keras cache, hash-checked and imported with the preset's
settings (`tsm_keras.presets`); `--checkpoint` gives a copy obtained by hand.

The architecture (backbone, classes, shift placement, Non-local type, temporal
pooling, MobileOne deploy form) is read from the checkpoint's keys and shapes;
T, shift_div and an ambiguous Non-local type come from the flags, else from
the training config stored in the checkpoint, else from its file name
(`1x1x8`, `segment8`, `nl-dot-product`), else the seed row defaults (T = 8,
16 for MobileOne). The file is read without executing anything in it and
without PyTorch. The import is strict: any missing, unexpected or misshapen
tensor stops it with a list naming both sides.

Next to MODEL.keras it writes MODEL.import.json (source, architecture, where
each setting came from, normalisation mean/std on 0..255 RGB, skipped
objects) and, when the checkpoint stores class names, MODEL.labels.txt (for
`tsm-export --labels`).

`--arch`, `--num-segments`, `--shift-div`, `--non-local` and `--direction`
are `TSMSpec` fields, and the spec checks them: a value it refuses stops the
command with the allowed values (`--direction: expected one of
['bidirectional', 'unidirectional'], got 'sideways'`).
"""

import json
import os

from tsm_keras.cli import common

SOURCES = ("auto", "mmaction2", "mit", "mit_online")  # checked against tsm_keras.weights.SOURCES in the tests
# Flags that set a `TSMSpec` field (flag destination -> field). The spec checks their values once
# the arguments are parsed, so `--help` needs no TensorFlow and no choice list is spelled here.
SPEC_FLAGS = {"arch": "backbone", "num_segments": "num_segments", "shift_div": "shift_div",
              "non_local": "non_local", "direction": "direction"}


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-import", description, epilog=epilog)
    parser.add_argument("checkpoint", nargs="?", help="PyTorch checkpoint (.pth, .pt, .pth.tar)")
    parser.add_argument("--preset", help="a published checkpoint by name (tsm_keras.list_presets())")
    parser.add_argument("--checkpoint", dest="preset_checkpoint", metavar="CKPT",
                        help="with --preset: a local copy of its checkpoint (no download)")
    parser.add_argument("--out", required=True, help="output Keras model (.keras)")
    parser.add_argument("--source", choices=SOURCES, default="auto")
    parser.add_argument("--arch", metavar="BACKBONE",
                        help="registered backbone the checkpoint must hold (checked, not forced)")
    parser.add_argument("--num-segments", type=int, help="frames per clip T")
    parser.add_argument("--shift-div", type=int, help="1/shift_div of the channels shift each way")
    parser.add_argument("--non-local", metavar="MODE",
                        help="Non-local mode of the blocks, when the file cannot tell (a TSMSpec non_local)")
    parser.add_argument("--direction", metavar="DIRECTION",
                        help="shift direction (a TSMSpec direction; default from the checkpoint's family)")
    parser.add_argument("--input-size", default="224", help="frame size: S or HxW (default 224)")
    parser.add_argument("--shift-segments", type=int,
                        help="MobileOne: clip length the shifts assume (default: from the stored config)")
    return parser


def input_shape(text):
    """`(H, W, 3)` from `S` or `HxW`; raises `UsageError`."""
    try:
        sizes = [int(value) for value in text.lower().split("x")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 16:
        raise common.UsageError(f"--input-size must be S or HxW with sides >= 16, got {text!r}")
    return (sizes[0], sizes[-1], 3)


def check_preset_arguments(args):
    """`--preset` and a checkpoint file exclude each other, and a preset fixes the architecture."""
    if args.preset is None and args.checkpoint is None:
        raise common.UsageError("give a checkpoint file or --preset NAME")
    if args.preset is None:
        if args.preset_checkpoint is not None:
            raise common.UsageError("--checkpoint goes with --preset; give the checkpoint file as the positional argument")
        return
    if args.checkpoint is not None:
        raise common.UsageError("--preset takes its local copy as --checkpoint CKPT, not as a positional argument")
    fixed = [flag for flag, value in (("--source", args.source != "auto"), ("--arch", args.arch),
                                      ("--num-segments", args.num_segments), ("--shift-div", args.shift_div),
                                      ("--non-local", args.non_local), ("--direction", args.direction),
                                      ("--shift-segments", args.shift_segments)) if value]
    if fixed:
        raise common.UsageError(f"--preset fixes the architecture; drop {', '.join(fixed)}")


def check_spec_flags(args):
    """Each given `SPEC_FLAGS` value through its `TSMSpec` field's check; raises `UsageError` naming the flag."""
    from tsm_keras.models.spec import TSMSpec
    from tsm_keras.utils.config import ConfigError

    for dest, field in SPEC_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        try:
            TSMSpec.check_field(field, value)
        except ConfigError as error:
            raise common.UsageError(f"--{dest.replace('_', '-')}: {error.problem}") from None


def import_preset(args, shape, console):
    """`--preset NAME`: the preset's model to `--out`, its labels and settings next to it."""
    from tsm_keras import presets
    from tsm_keras.data.annotations import write_label_map

    preset = presets.get_preset(args.preset)
    model = presets.from_preset(args.preset, checkpoint=args.preset_checkpoint, input_shape=shape)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save(args.out)
    summary_path, labels_path = sidecar_paths(args.out)
    write_label_map(labels_path, preset.class_names())
    summary = {
        "preset": preset.name,
        "url": preset.url,
        "sha256_prefix": preset.sha256,
        "tsm_config": model.tsm_config(),
        "normalization": preset.normalization,
        "test_protocol": preset.test_protocol,
        "published_top1": preset.top1,
        "labels_file": os.path.abspath(labels_path),
    }
    with open(summary_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    spec = preset.spec
    console.print(f"preset {preset.name} ({preset.alias}): {spec.backbone}, {spec.num_classes} classes, "
                  f"T={spec.num_segments}")
    console.print(f"wrote {args.out}, {summary_path} and {labels_path}")


def sidecar_paths(out):
    stem = out[: -len(".keras")]
    return f"{stem}.import.json", f"{stem}.labels.txt"


def run(args):
    if not args.out.endswith(".keras"):
        raise common.UsageError(f"--out must end with .keras, got {args.out!r}")
    shape = input_shape(args.input_size)
    check_preset_arguments(args)
    check_spec_flags(args)
    from rich.console import Console
    from rich.table import Table

    from tsm_keras.data.annotations import write_label_map
    from tsm_keras.convert import import_torch_checkpoint

    console = Console(stderr=True)
    if args.preset is not None:
        return import_preset(args, shape, console)
    imported = import_torch_checkpoint(
        args.checkpoint,
        source=args.source,
        arch=args.arch,
        num_segments=args.num_segments,
        shift_div=args.shift_div,
        non_local=args.non_local,
        direction=args.direction,
        input_shape=shape,
        shift_segments=args.shift_segments,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    imported.model.save(args.out)
    summary_path, labels_path = sidecar_paths(args.out)
    summary = imported.summary()
    if imported.class_names:
        write_label_map(labels_path, imported.class_names)
        summary["labels_file"] = os.path.abspath(labels_path)
    with open(summary_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)

    table = Table(title=f"{os.path.basename(args.checkpoint)} ({imported.source})")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for name in ("backbone", "num_classes", "num_segments", "shift_div", "shift_place", "direction",
                 "non_local", "temporal_pool", "backbone_options", "input_shape"):
        table.add_row(name, str(getattr(imported.spec, name)), imported.inferred.get(name, "default"))
    normalization = imported.normalization
    table.add_row("mean / std", f"{normalization['mean']} / {normalization['std']}", normalization["origin"])
    console.print(table)
    console.print(
        f"{imported.tensors_used} tensors loaded (every Keras weight filled); "
        f"{len(imported.dropped)} num_batches_tracked dropped; "
        f"{len(imported.skipped)} non-weight objects skipped unexecuted"
    )
    console.print(f"wrote {args.out} and {summary_path}")


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
