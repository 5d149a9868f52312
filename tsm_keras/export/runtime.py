"""Running an exported model with ai-edge-litert, by signature names, and online models frame by frame.

`LiteRTModel` wraps `ai_edge_litert.interpreter.Interpreter` and its single
signature runner. It knows each input's and output's dtype and
quantization, so callers can work in float (`__call__` quantizes float
inputs and dequantizes integer outputs) or in the model's own types
(`run`, which a stream uses to feed int8 states straight back).

An online model is driven the same way whatever runs it: `zero_states()`,
then `logits, states = runner.step(frame, states)` per frame.
`LiteRTModel` and `KerasOnlineRunner` (the float Keras `OnlineTSM`) both
have that interface, and `stream_frames` is the one frame-by-frame loop
(used by prediction, streaming, int8 calibration and the export check).
"""

import time

import numpy as np

INTEGER_TYPES = (np.int8, np.uint8, np.int16)
# Signature names of an exported online model (`tsm_keras.models.online`;
# not imported from there, which would load Keras into a LiteRT-only runner).
IMAGE_NAME = "image"
LOGITS_NAME = "logits"


def stream_frames(runner, frames, states=None):
    """Feeds `frames` one by one through an online runner, carrying its states.

    Args:
        runner: a `LiteRTModel` of an online model or a `KerasOnlineRunner`.
        frames: iterable of normalised float32 frames `(H, W, 3)`.
        states: initial states (default: `runner.zero_states()`).

    Yields:
        `(frame, states, logits)` per frame: the states the frame was fed
        with and its float32 logits `(num_classes,)`.
    """
    states = runner.zero_states() if states is None else states
    for frame in frames:
        logits, next_states = runner.step(frame, states)
        yield frame, states, logits
        states = next_states


def clip_logits(runner, clip):
    """`(T, num_classes)` per-frame logits of an online runner over one clip, from zero states."""
    return np.stack([logits for _, _, logits in stream_frames(runner, clip)])


class KerasOnlineRunner:
    """A float Keras `OnlineTSM` with `LiteRTModel`'s online interface.

    Args:
        online_model: a `tsm_keras.export.OnlineTSM`.

    Example:

    >>> runner = KerasOnlineRunner(build_online(model))
    >>> logits, states = runner.step(frame, runner.zero_states())
    """

    def __init__(self, online_model):
        import tensorflow as tf

        self.model = online_model
        self.state_names = tuple(online_model.state_names)
        self._call = tf.function(lambda inputs: online_model(inputs, training=False))

    def zero_states(self):
        return self.model.init_states()

    def step(self, frame, states):
        """`(logits (num_classes,), next_states)` for one normalised frame `(H, W, 3)`."""
        frame = np.asarray(frame, np.float32)
        outputs = self._call({IMAGE_NAME: frame.reshape((1,) + frame.shape[-3:]), **states})
        next_states = {name: outputs[name].numpy() for name in self.state_names}
        return outputs[LOGITS_NAME].numpy()[0], next_states


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
    >>> logits, states = model.step(frame, states)
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
        self.last_invoke_ms = None

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

    def step(self, frame, states):
        """One frame through an online model: `(logits, next_states)`.

        `frame` is a normalised float `(H, W, 3)` (quantized here if the
        model takes int8); `states` come from `zero_states` or the previous
        step, in the model's own dtype: int8 states go back in as they came
        out (inputs and outputs share one quantization). The logits are
        float32 `(num_classes,)`; the interpreter time of the call is kept
        in `last_invoke_ms`.
        """
        frame = np.asarray(frame, np.float32)
        image = self.quantize(IMAGE_NAME, frame.reshape((1,) + frame.shape[-3:]))
        start = time.perf_counter()
        outputs = self.run({IMAGE_NAME: image, **states})
        self.last_invoke_ms = (time.perf_counter() - start) * 1000.0
        next_states = {name: outputs[name] for name in states}
        return self.dequantize(LOGITS_NAME, outputs[LOGITS_NAME])[0], next_states
