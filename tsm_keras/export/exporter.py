"""One call from a trained TSM to a .tflite file and its metadata sidecar.

`export_tflite` is what `tsm-export` runs: it builds the online
model when asked, gathers calibration data for int8, converts with builtin
ops only, and writes `FILE.tflite` plus `FILE.tflite.json`.
"""

import os

from tsm_keras.export import calibration, metadata, tflite
from tsm_keras.models.online import build_online

MODES = ("offline", "online")


def load_data_config(path):
    """A `DataConfig` from a YAML file: a training config (its `data:`
    section, after its `base:` chain) or a bare data section."""
    from tsm_keras.data import DataConfig
    from tsm_keras.training.config import read_config_file

    values = read_config_file(path)  # a ValueError naming the file when unreadable
    if "data" in values:
        return DataConfig.from_dict(values["data"] or {}, path=f"{path}: data")
    return DataConfig.from_dict(values, path=f"{path}: data")


def resolve_labels(num_classes, labels=None, data_config=None):
    """Class names: `labels` (a list, a label-map file or a shipped name),
    else the data config's, else `class_0 ...`; the count must match."""
    from tsm_keras.data import load_label_map
    from tsm_keras.data.sources import class_names

    where = "labels"
    if isinstance(labels, (str, os.PathLike)):
        where = f"label map {labels}"
        labels = load_label_map(os.fspath(labels))
    elif labels is None and data_config is not None:
        labels = class_names(data_config)
        where = "the data config's label map"
    if labels is None:
        return [f"class_{index}" for index in range(num_classes)]
    labels = [str(label) for label in labels]
    if len(labels) != num_classes:
        raise ValueError(f"{where} has {len(labels)} names, the model has {num_classes} classes")
    return labels


def export_tflite(
    model,
    out,
    mode="online",
    quant="fp32",
    io="float",
    data_config=None,
    calib=None,
    calib_videos=32,
    labels=None,
):
    """Converts a `TSM` and writes `out` (.tflite) and `out.json` (metadata).

    Args:
        model: a `tsm_keras.TSM` (uni-directional for `mode="online"`).
        out: path of the .tflite file.
        mode: `"offline"` (clip `(1, T, H, W, 3)` -> logits) or `"online"`
            (frame + states -> logits + states).
        quant: `"fp32"`, `"fp16"`, `"dynamic"` or `"int8"`.
        io: `"float"` or `"int8"` (int8 needs `quant="int8"`).
        data_config: `DataConfig` of the model (preprocessing, labels,
            calibration split), or None (built-in synthetic dataset, default
            normalisation).
        calib: None (the data config's val split), a video list file or a
            directory of videos; used for `quant="int8"` only.
        calib_videos: number of calibration videos (clips).
        labels: class names, a label-map file or a shipped name; default
            from the data config.

    Returns:
        `(model_content, ModelMetadata)`.
    """
    _check_arguments(out, mode, quant, io)
    names = resolve_labels(model.num_classes, labels, data_config)
    target = build_online(model) if mode == "online" else model
    representative, calibration_info = None, None
    if quant == "int8":
        representative, calibration_info = _calibrate(
            model, target, mode, data_config, calib, calib_videos
        )
    if mode == "online":
        content = tflite.convert_online(target, quant, representative, io)
        state_names = list(target.state_names)
    else:
        content = tflite.convert_offline(target, quant, representative, io)
        state_names = []
    tflite.save(content, out)
    info = metadata.describe(
        content,
        mode=mode,
        quant=quant,
        io=io,
        labels=names,
        input_size=tuple(model.frame_shape[:2]),
        mean=tuple(data_config.mean) if data_config is not None else metadata.IMAGENET_MEAN,
        std=tuple(data_config.std) if data_config is not None else metadata.IMAGENET_STD,
        resize_short=data_config.resize_short if data_config is not None else None,
        num_segments=model.num_segments,
        shift_div=model.shift_div,
        shift_place=model.shift_place,
        direction=model.direction,
        backbone=model.backbone,
        layout=model.layout,
        state_names=state_names,
        calibration=calibration_info,
    )
    metadata.save_metadata(info, out)
    return content, info


def _check_arguments(out, mode, quant, io):
    """Refuses an impossible export before any work, naming the argument."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if quant not in tflite.QUANT_MODES:
        raise ValueError(f"quant must be one of {tflite.QUANT_MODES}, got {quant!r}")
    if io not in tflite.IO_TYPES:
        raise ValueError(f"io must be one of {tflite.IO_TYPES}, got {io!r}")
    if io == "int8" and quant != "int8":
        raise ValueError(f"io='int8' needs quant='int8' (a {quant} model has float inputs and outputs)")
    if not os.fspath(out).endswith(".tflite"):
        raise ValueError(f"out must end with .tflite, got {out}")


def _calibrate(model, target, mode, data_config, calib, calib_videos):
    """The int8 representative dataset (real clips, streamed for an online model) and its record."""
    config, split = calibration.calibration_config(
        data_config, model.frame_shape[:2], model.num_segments, calib
    )
    clips = calibration.calibration_clips(config, split, calib_videos)
    samples = (
        calibration.online_samples(target, clips)
        if mode == "online"
        else calibration.offline_samples(clips)
    )
    representative = calibration.representative_dataset(samples)
    calibration_info = {
        "source": os.fspath(calib) if calib is not None else f"{config.source}:{split}",
        "videos": calib_videos,
        "samples": representative.num_samples,
    }
    return representative, calibration_info
