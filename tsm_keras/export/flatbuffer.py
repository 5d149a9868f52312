"""Reading (and one careful edit of) LiteRT flatbuffers.

Uses the flatbuffer schema bindings that ship with `ai-edge-litert`
(`ai_edge_litert.schema_py_generated`), so an exported model can be checked
without running it: which operators it holds (`list_ops`), what its
signature looks like (`signature_tensors`), whether every state output is
quantized exactly like its state input (`state_quantization_mismatches`), and,
if not, appending the requantization that makes it so
(`requantize_state_outputs`).
"""

import dataclasses

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_FILE_IDENTIFIER = b"TFL3"
_OPERATOR_NAMES = {
    value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}
_TENSOR_TYPE_NAMES = {
    value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")
}


def read_model(model_content):
    """The mutable object tree (`schema.ModelT`) of a .tflite flatbuffer."""
    if not bytes(model_content[4:8]) == _FILE_IDENTIFIER:
        raise ValueError("not a LiteRT (.tflite) flatbuffer: missing the 'TFL3' identifier")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_content, 0))


def write_model(model):
    """Serialises a `schema.ModelT` back to .tflite bytes."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _decode(name):
    return name.decode() if isinstance(name, bytes) else name


def operator_name(model, operator):
    """`"CONV_2D"`, ... for builtins; the custom code (e.g. `"FlexErfinv"`) otherwise."""
    code = model.operatorCodes[operator.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return _decode(code.customCode)
    return _OPERATOR_NAMES.get(builtin, str(builtin))


def custom_ops(model_content):
    """Names of the custom (non-builtin) operator codes, e.g. Flex ops."""
    model = read_model(model_content)
    return sorted(
        _decode(code.customCode)
        for code in model.operatorCodes
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CUSTOM
    )


def list_ops(model_content, subgraph=0):
    """Operator names of one subgraph, in execution order."""
    model = read_model(model_content)
    return [operator_name(model, op) for op in model.subgraphs[subgraph].operators]


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: name, shape, element type, quantization."""

    name: str
    shape: tuple
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    tensor_index: int = -1

    @property
    def quantization(self):
        return (self.scale, self.zero_point)

    def to_json(self):
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def _tensor_info(name, tensor, index):
    quant = tensor.quantization
    scale = float(quant.scale[0]) if quant is not None and quant.scale is not None and len(quant.scale) else 0.0
    zero_point = (
        int(quant.zeroPoint[0])
        if quant is not None and quant.zeroPoint is not None and len(quant.zeroPoint)
        else 0
    )
    return TensorInfo(
        name=name,
        shape=tuple(int(dim) for dim in tensor.shape),
        dtype=_TENSOR_TYPE_NAMES[tensor.type],
        scale=scale,
        zero_point=zero_point,
        tensor_index=index,
    )


def signature_tensors(model_content, signature_key=None):
    """`(inputs, outputs)`: dicts `{signature name: TensorInfo}` of one signature.

    Args:
        model_content: .tflite bytes.
        signature_key: the signature to read; None requires exactly one.
    """
    model = read_model(model_content)
    signatures = model.signatureDefs or []
    if signature_key is None:
        if len(signatures) != 1:
            raise ValueError(f"expected exactly one signature, found {len(signatures)}")
        signature = signatures[0]
    else:
        matches = [sig for sig in signatures if _decode(sig.signatureKey) == signature_key]
        if not matches:
            raise ValueError(f"no signature named {signature_key!r}")
        signature = matches[0]
    subgraph = model.subgraphs[signature.subgraphIndex]

    def collect(entries):
        return {
            _decode(entry.name): _tensor_info(
                _decode(entry.name), subgraph.tensors[entry.tensorIndex], entry.tensorIndex
            )
            for entry in entries or []
        }

    return collect(signature.inputs), collect(signature.outputs)


def state_quantization_mismatches(model_content, state_names):
    """`{state name: (input quantization, output quantization)}` where they differ.

    An app feeds each state output straight back as the next frame's state
    input, so for an integer state both must share one scale and zero point.
    Float states (no quantization) always match.
    """
    inputs, outputs = signature_tensors(model_content)
    mismatches = {}
    for name in state_names:
        if name not in inputs or name not in outputs:
            raise ValueError(f"state {name!r} is not both a signature input and output")
        source, target = inputs[name], outputs[name]
        if source.dtype != target.dtype or (
            source.dtype in ("int8", "uint8", "int16")
            and (not np.isclose(source.scale, target.scale, rtol=0, atol=0)
                 or source.zero_point != target.zero_point)
        ):
            mismatches[name] = (source.quantization, target.quantization)
    return mismatches


def _opcode_index(model, builtin):
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def requantize_state_outputs(model_content, state_names):
    """Makes every state output carry its state input's quantization.

    For each state whose output scale / zero point differ from the input's,
    appends a QUANTIZE operator (int8 -> int8 requantization, a builtin)
    from the old output tensor to a new tensor with the input's parameters,
    and points the signature and the subgraph outputs at the new tensor.
    States that already match are left untouched, so a model that needs no
    fix comes back byte for byte.

    Returns:
        `(model_content, fixed_names)`.
    """
    mismatches = state_quantization_mismatches(model_content, state_names)
    if not mismatches:
        return model_content, []
    model = read_model(model_content)
    signature = model.signatureDefs[0]
    subgraph = model.subgraphs[signature.subgraphIndex]
    quantize = _opcode_index(model, schema.BuiltinOperator.QUANTIZE)
    inputs = {_decode(entry.name): entry for entry in signature.inputs}
    for entry in signature.outputs:
        name = _decode(entry.name)
        if name not in mismatches:
            continue
        source = subgraph.tensors[inputs[name].tensorIndex]
        if source.type != subgraph.tensors[entry.tensorIndex].type:
            raise ValueError(
                f"state {name!r}: input type {_TENSOR_TYPE_NAMES[source.type]} differs from the "
                f"output type; requantization only fixes scales"
            )
        old_index = entry.tensorIndex
        old = subgraph.tensors[old_index]
        new = schema.TensorT()
        new.shape = np.array(old.shape, dtype=np.int32)
        new.type = old.type
        new.buffer = 0
        new.name = f"{_decode(old.name)}_requantized".encode()
        new.quantization = schema.QuantizationParametersT()
        new.quantization.scale = np.array(source.quantization.scale, dtype=np.float32)
        new.quantization.zeroPoint = np.array(source.quantization.zeroPoint, dtype=np.int64)
        new.quantization.quantizedDimension = 0
        subgraph.tensors.append(new)
        new_index = len(subgraph.tensors) - 1
        operator = schema.OperatorT()
        operator.opcodeIndex = quantize
        operator.inputs = np.array([old_index], dtype=np.int32)
        operator.outputs = np.array([new_index], dtype=np.int32)
        subgraph.operators.append(operator)
        subgraph.outputs = np.array(
            [new_index if index == old_index else index for index in subgraph.outputs], dtype=np.int32
        )
        entry.tensorIndex = new_index
    return write_model(model), sorted(mismatches)
