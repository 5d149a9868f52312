"""LiteRT (TFLite) conversion of offline and online TSMs, builtin ops only.

Path: Keras model -> `keras.export.ExportArchive` (one `serving_default`
endpoint whose arguments and returned dict carry the public names) ->
SavedModel in a temporary directory -> `tf.lite.TFLiteConverter
.from_saved_model`. That is the path Keras 3 itself uses for LiteRT and the
only one that works here: with TensorFlow 2.21 and Keras 3,
`from_concrete_functions` keeps every Keras variable as a resource variable
(VAR_HANDLE / READ_VARIABLE ops, BatchNorm left unfolded, NaN outputs under
XNNPACK), and `from_keras_model` fails on dict-input models. Going through a
SavedModel freezes the weights, folds BatchNorm into the convolutions and
keeps the signature names.

Every conversion is restricted to builtin operators
(`TFLITE_BUILTINS`, or `TFLITE_BUILTINS_INT8` for full-integer models): a
graph that would need Flex (select TF) or custom ops fails with
`UnsupportedOpsError` naming the ops and where they come from. Each
temporal shift is traced as one depthwise convolution over time with 0/1 taps
(`tsm_keras.layers.shift_kernel.portable`): one operator where the slicing
form is five copies, and faster under XNNPACK; trace inside
`portable("slices")` for the slicing form. The result
has one signature, `serving_default`, with these names:

- offline: input `clip` `(1, T, H, W, 3)`, output `logits` `(1, num_classes)`;
- online: inputs `image` `(1, H, W, 3)` and `state_*`, outputs `logits` and
  `state_*` (see `tsm_keras.models.online`).

Quantization modes (`QUANT_MODES`):

- `fp32`: float model;
- `fp16`: float16 weights, float compute on CPU (dequantized at load);
- `dynamic`: int8 weights, activations quantized on the fly (float I/O);
- `int8`: full-integer model calibrated on representative inputs
  (`tsm_keras.export.calibration`), int8 or float I/O (`io`). For online
  models every state output is checked to carry exactly the quantization of
  its state input (so outputs feed straight back) and requantized in the
  graph if the converter did not make them equal. An int8 graph with float
  islands (DEQUANTIZE -> float op -> QUANTIZE inside the graph) is refused
  with `FloatIslandsError`.
"""

import os
import re
import tempfile

import keras
import tensorflow as tf

from tsm_keras.export import flatbuffer
from tsm_keras.layers import shift_kernel
from tsm_keras.models.online import IMAGE_NAME, LOGITS_NAME

QUANT_MODES = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES = ("float", "int8")
CLIP_NAME = "clip"
SIGNATURE_KEY = "serving_default"
# Operators that convert between float and integer: the only ones allowed in a
# full-integer graph, and only at its boundary (float I/O).
BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


class UnsupportedOpsError(ValueError):
    """The graph needs operators outside the LiteRT builtin set.

    Attributes:
        ops: the TensorFlow op names (e.g. `["tf.Erfinv"]`).
        locations: where they come from (Keras layer paths), when known.
    """

    def __init__(self, ops, locations=(), details=""):
        self.ops = sorted(set(ops))
        self.locations = list(locations)
        message = (
            f"LiteRT conversion needs operators outside the builtin set: {', '.join(self.ops)}. "
            "This project exports builtin ops only (no Flex / select-TF or custom ops), so "
            "that the model runs on any LiteRT runtime."
        )
        if self.locations:
            message += f" They come from: {'; '.join(self.locations)}."
        if details and not self.ops:
            message += f"\n{details}"
        super().__init__(message)


class FloatIslandsError(ValueError):
    """A full-integer (int8) conversion left part of the graph in float.

    Attributes:
        islands: `[(operator index, operator name)]` of the float operators.
    """

    def __init__(self, islands):
        self.islands = list(islands)
        listed = ", ".join(f"#{index} {name}" for index, name in self.islands[:12])
        super().__init__(
            f"the int8 graph is not fully integer: {len(self.islands)} operator(s) run in float "
            f"({listed}); some op has no int8 kernel, so the converter wrapped it in "
            "DEQUANTIZE/QUANTIZE"
        )


def _unsupported_ops(error):
    """Op names and locations from a converter error (structured or text)."""
    ops, locations = [], []
    for data in getattr(error, "errors", None) or []:
        name = getattr(getattr(data, "operator", None), "name", "")
        if name:
            ops.append(name)
            calls = getattr(getattr(data, "location", None), "call", [])
            if calls:
                locations.append(f"{name} in {calls[0].name.split('@')[0]}")
    ops += re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))
    return ops, locations


def _configure(converter, quant, representative_dataset, io):
    if quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {QUANT_MODES}, got {quant!r}")
    if io not in IO_TYPES:
        raise ValueError(f"io must be one of {IO_TYPES}, got {io!r}")
    if io == "int8" and quant != "int8":
        raise ValueError(f"io='int8' needs quant='int8' (a {quant} model has float I/O)")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = False
    if quant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant == "int8":
        if representative_dataset is None:
            raise ValueError("quant='int8' needs a representative_dataset for calibration")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


def convert_function(model, function, input_specs, quant="fp32", representative_dataset=None, io="float"):
    """Converts `function(*inputs) -> {name: tensor}` over `model`'s weights.

    Args:
        model: the Keras model whose variables `function` uses (tracked so
            that the SavedModel carries them).
        function: takes one tensor per entry of `input_specs`, in order, and
            returns a dict of named outputs.
        input_specs: `tf.TensorSpec`s with static shapes and the public
            input names.
        quant: one of `QUANT_MODES`.
        representative_dataset: for `"int8"`: a callable returning an
            iterator of `{input name: array}` dicts.
        io: `"float"` or `"int8"` (full-integer inputs and outputs).

    Returns:
        The .tflite flatbuffer as bytes.

    Raises:
        UnsupportedOpsError: if any op would need Flex / select-TF / custom
            kernels.
    """
    # LiteRT has no kernel for the native shift: traced in its depthwise form
    # (one DEPTHWISE_CONV_2D per shift), unless the caller chose a form.
    shift_form = shift_kernel.portable_form() or "depthwise"
    with shift_kernel.portable(shift_form), tempfile.TemporaryDirectory(prefix="tsm_keras_export_") as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, function, input_signature=list(input_specs))
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=[SIGNATURE_KEY]
        )
        _configure(converter, quant, representative_dataset, io)
        try:
            model_content = converter.convert()
        except Exception as error:  # ConverterError; its type moved between TF releases
            ops, locations = _unsupported_ops(error)
            if ops:
                raise UnsupportedOpsError(ops, locations) from error
            raise
    custom = flatbuffer.custom_ops(model_content)
    if custom:
        raise UnsupportedOpsError(custom, details="the converted graph holds custom operators")
    if quant == "int8":
        islands = float_islands(model_content)
        if islands:
            raise FloatIslandsError(islands)
    return model_content


def convert_offline(model, quant="fp32", representative_dataset=None, io="float"):
    """LiteRT model of an offline `TSM`: `clip (1, T, H, W, 3) -> logits`.

    See `convert_function` for the arguments.
    """
    shape = (1, model.num_segments) + tuple(model.frame_shape)
    specs = [tf.TensorSpec(shape, tf.float32, name=CLIP_NAME)]

    def serve(clip):
        return {LOGITS_NAME: model(clip, training=False)}

    return convert_function(model, serve, specs, quant, representative_dataset, io)


def convert_online(online_model, quant="fp32", representative_dataset=None, io="float"):
    """LiteRT model of an `OnlineTSM`: `{image, state_*} -> {logits, state_*}`.

    For `quant="int8"` the state quantization is checked and, where the
    converter left an output's scale different from its input's, fixed
    with an in-graph requantization (`flatbuffer.requantize_state_outputs`).
    See `convert_function` for the arguments.
    """
    names = (IMAGE_NAME,) + tuple(online_model.state_names)
    specs = [
        tf.TensorSpec(tuple(online_model.input[name].shape), tf.float32, name=name) for name in names
    ]

    def serve(*tensors):
        return online_model(dict(zip(names, tensors)), training=False)

    model_content = convert_function(online_model, serve, specs, quant, representative_dataset, io)
    if quant == "int8":
        model_content, _ = flatbuffer.requantize_state_outputs(model_content, online_model.state_names)
        mismatches = flatbuffer.state_quantization_mismatches(model_content, online_model.state_names)
        if mismatches:  # pragma: no cover - requantize_state_outputs guarantees this
            raise RuntimeError(f"state quantization still differs after requantization: {mismatches}")
    return model_content


def float_islands(model_content):
    """Float operators inside a full-integer graph: `[(index, op name)]`.

    A QUANTIZE that reads a graph input or a DEQUANTIZE that writes a graph
    output is the float I/O boundary; a QUANTIZE between two integer tensors
    is a requantization. Any other QUANTIZE / DEQUANTIZE, and any other
    operator that produces a float tensor, means part of the graph runs in
    float (e.g. around a temporal shift), and is reported.
    """
    model = flatbuffer.read_model(model_content)
    subgraph = model.subgraphs[0]
    graph_inputs, graph_outputs = set(subgraph.inputs), set(subgraph.outputs)
    float_types = {flatbuffer.schema.TensorType.FLOAT32, flatbuffer.schema.TensorType.FLOAT16}
    islands = []
    for index, operator in enumerate(subgraph.operators):
        name = flatbuffer.operator_name(model, operator)
        if name not in BOUNDARY_OPS:
            if any(subgraph.tensors[output].type in float_types for output in operator.outputs):
                islands.append((index, name))
            continue
        source = subgraph.tensors[operator.inputs[0]]
        target = subgraph.tensors[operator.outputs[0]]
        if name == "QUANTIZE" and source.type not in float_types and target.type not in float_types:
            continue  # integer requantization
        if name == "QUANTIZE" and operator.inputs[0] in graph_inputs:
            continue
        if name == "DEQUANTIZE" and operator.outputs[0] in graph_outputs:
            continue
        islands.append((index, name))
    return islands


def save(model_content, path):
    """Writes .tflite bytes to `path` (creating its directory)."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(model_content)
    return path
