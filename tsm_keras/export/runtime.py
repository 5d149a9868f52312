"""Running an exported model with ai-edge-litert, by signature names.

`LiteRTModel` wraps `ai_edge_litert.interpreter.Interpreter` and its single
signature runner. It knows each input's and output's dtype and
quantization, so callers can work in float (`__call__` quantizes float
inputs and dequantizes integer outputs) or in the model's own types
(`run`, which a stream uses to feed int8 states straight back).
"""

import numpy as np

INTEGER_TYPES = (np.int8, np.uint8, np.int16)


class LiteRTModel:
    """One LiteRT model, called by signature names.

    Args:
        interpreter: an `ai_edge_litert.interpreter.Interpreter` (or a path
            to a .tflite file, opened with `num_threads`).
        num_threads: CPU threads when opening a path (XNNPACK is applied by
            the default op resolver).

    Example:

    >>> model = LiteRTModel("online.tflite", num_threads=2)
    >>> states = model.zero_states()
    >>> outputs = model.run({"image": model.quantize("image", frame), **states})
    """

    def __init__(self, interpreter, num_threads=None):
        source = "the given interpreter"
        if not hasattr(interpreter, "get_signature_runner"):
            from ai_edge_litert.interpreter import Interpreter

            source = str(interpreter)
            interpreter = Interpreter(model_path=source, num_threads=num_threads)
        self.interpreter = interpreter
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(
                f"{source}: expected one signature (tsm_keras exports `serving_default`), "
                f"found {sorted(signatures)}"
            )
        self.signature_key = next(iter(signatures))
        self.runner = interpreter.get_signature_runner(self.signature_key)
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()

    @property
    def input_names(self):
        return tuple(self.input_details)

    def _quantization(self, details):
        scale, zero_point = details["quantization"]
        return float(scale), int(zero_point)

    def quantize(self, name, value):
        """A float array in the dtype of input `name` (quantized if integer)."""
        details = self.input_details[name]
        dtype = details["dtype"]
        value = np.asarray(value, np.float32)
        if dtype in INTEGER_TYPES:
            scale, zero_point = self._quantization(details)
            info = np.iinfo(dtype)
            value = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
        return value.astype(dtype)

    def dequantize(self, name, value):
        """Output `name` as float32 (dequantized if integer)."""
        details = self.output_details[name]
        if details["dtype"] in INTEGER_TYPES:
            scale, zero_point = self._quantization(details)
            return (np.asarray(value, np.float32) - zero_point) * scale
        return np.asarray(value, np.float32)

    def zero_states(self, state_names=None):
        """Zero states in the model's own dtype (the zero point for int8)."""
        if state_names is None:
            state_names = [name for name in self.input_names if name.startswith("state_")]
        return {
            name: self.quantize(name, np.zeros(self.input_details[name]["shape"], np.float32))
            for name in state_names
        }

    def run(self, inputs):
        """Runs on inputs already in the model's dtypes; raw outputs."""
        missing = sorted(set(self.input_names) - set(inputs))
        if missing:
            raise ValueError(f"missing inputs {missing}; the model takes {sorted(self.input_names)}")
        return self.runner(**inputs)

    def __call__(self, inputs):
        """Float in, float out: quantizes inputs and dequantizes outputs as needed."""
        raw = self.run({name: self.quantize(name, value) for name, value in inputs.items()})
        return {name: self.dequantize(name, value) for name, value in raw.items()}
