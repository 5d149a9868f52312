"""The JSON sidecar that travels with an exported .tflite model.

`FILE.tflite.json` next to `FILE.tflite` holds what a runner needs besides
the graph: class names, the preprocessing (input size, short-side resize,
mean / std on 0..255 RGB), the temporal settings (num_segments, shift
settings), and the signature with every input's and output's shape, dtype
and quantization, including the state names of an online model. The
runners (`tsm_keras.inference.predict`, `tsm_keras.inference.stream`) read it with
`load_metadata`.

Format (`format: "tsm_keras.litert/1"`)::

    {
      "format": "tsm_keras.litert/1",
      "mode": "online" | "offline",
      "quant": "fp32" | "fp16" | "dynamic" | "int8",
      "io": "float" | "int8",
      "signature": "serving_default",
      "backbone": "mobilenet_v2", "layout": "keras",
      "num_classes": 10, "labels": ["moving_left", ...],
      "input_size": [H, W], "resize_short": 256 | null,
      "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
      "num_segments": 8, "shift_div": 8, "shift_place": "blockres",
      "direction": "unidirectional",
      "inputs": [{"name", "shape", "dtype", "scale", "zero_point"}, ...],
      "outputs": [...],
      "state_names": ["state_block2_shift", ...],
      "calibration": {"source": ..., "samples": ...} | null
    }

`resize_short: null` means "resize the short side to the input size" before
the centre crop.
"""

import dataclasses
import json
import os
from typing import Optional

from tsm_keras.data.config import IMAGENET_MEAN, IMAGENET_STD
from tsm_keras.export import flatbuffer

FORMAT = "tsm_keras.litert/1"


@dataclasses.dataclass
class ModelMetadata:
    """What a runner needs to feed and read an exported model.

    Args:
        mode: `"offline"` (clip in, logits out) or `"online"` (frame and
            states in, logits and states out).
        quant: quantization mode of the export.
        io: `"float"` or `"int8"` input/output tensors.
        labels: class names, `labels[i]` for logit `i`.
        input_size: `(height, width)` of a frame at the network input.
        mean, std: per-channel normalisation of 0..255 RGB.
        resize_short: short side before the centre crop (None: input size).
        num_segments: frames per clip of the offline model (the online
            model was trained with it).
        shift_div, shift_place, direction: the temporal shift settings.
        backbone, layout: the network.
        inputs, outputs: signature entries (name, shape, dtype, scale,
            zero_point), as JSON dicts.
        state_names: online state names, in network order (empty offline).
        calibration: how an int8 model was calibrated, or None.
        signature: the signature key.
    """

    mode: str
    quant: str
    io: str
    labels: list
    input_size: tuple
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    resize_short: Optional[int] = None
    num_segments: int = 8
    shift_div: int = 8
    shift_place: str = "blockres"
    direction: str = "bidirectional"
    backbone: str = ""
    layout: str = "keras"
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    state_names: list = dataclasses.field(default_factory=list)
    calibration: Optional[dict] = None
    signature: str = "serving_default"

    @property
    def num_classes(self):
        return len(self.labels)

    def to_json(self):
        values = dataclasses.asdict(self)
        values = {"format": FORMAT, **values, "num_classes": self.num_classes}
        for key in ("input_size", "mean", "std"):
            values[key] = list(values[key])
        return values

    @classmethod
    def from_json(cls, values, where="metadata"):
        if values.get("format") != FORMAT:
            raise ValueError(f"{where}: expected format {FORMAT!r}, got {values.get('format')!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        missing = [name for name in ("mode", "quant", "io", "labels", "input_size") if name not in values]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        config = {key: value for key, value in values.items() if key in known}
        config["input_size"] = tuple(config["input_size"])
        config["mean"] = tuple(config.get("mean", IMAGENET_MEAN))
        config["std"] = tuple(config.get("std", IMAGENET_STD))
        return cls(**config)


def sidecar_path(model_path):
    """`FILE.tflite` -> `FILE.tflite.json`."""
    return f"{os.fspath(model_path)}.json"


def describe(model_content, **fields):
    """`ModelMetadata` for `model_content`: the signature is read from the graph."""
    inputs, outputs = flatbuffer.signature_tensors(model_content)
    return ModelMetadata(
        inputs=[info.to_json() for info in inputs.values()],
        outputs=[info.to_json() for info in outputs.values()],
        **fields,
    )


def save_metadata(metadata, model_path):
    """Writes the sidecar of `model_path`; returns its path."""
    path = sidecar_path(model_path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(metadata.to_json(), handle, indent=2)
        handle.write("\n")
    return path


def load_metadata(model_path):
    """The `ModelMetadata` of `model_path` (from `FILE.tflite.json`).

    Raises:
        FileNotFoundError: naming the expected sidecar path.
        ValueError: for a sidecar of another format or missing fields.
    """
    path = sidecar_path(model_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{model_path}: no metadata sidecar {path} (written by tsm-export next to "
            "the .tflite; it holds the labels, preprocessing and state names)"
        )
    with open(path, encoding="utf-8") as handle:
        try:
            values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    return ModelMetadata.from_json(values, where=path)
