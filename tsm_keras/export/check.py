"""How close an exported LiteRT model is to the Keras TSM it came from.

- Float models (`fp32`, `fp16`): the largest logit difference on one random
  input, relative to the largest Keras logit (`random_input_difference`).
- Quantized models (`dynamic`, `int8`): random inputs say little (a
  quantized model is only calibrated for real frames), so both models run on
  real held-out clips (`held_out_clips`: the data config's test split, or
  the built-in dataset's) and `compare_on_clips` reports how often their
  top-1 classes agree and the logit error.

Online models are compared the way they run: frame by frame with carried
states (`tsm_keras.export.runtime.stream_frames`), the per-frame logits
averaged over the clip, on both sides.
"""

import numpy as np

from tsm_keras.export import calibration
from tsm_keras.models.online import build_online
from tsm_keras.export.runtime import KerasOnlineRunner, LiteRTModel, clip_logits
from tsm_keras.export.tflite import CLIP_NAME

QUANTIZED = ("dynamic", "int8")


def _runners(model, mode, model_content):
    from ai_edge_litert.interpreter import Interpreter

    litert = LiteRTModel(Interpreter(model_content=model_content))
    if mode == "online":
        keras_runner = KerasOnlineRunner(build_online(model))
        return (lambda clip: clip_logits(keras_runner, clip).mean(axis=0),
                lambda clip: clip_logits(litert, clip).mean(axis=0))
    return (lambda clip: np.asarray(model(clip[None], training=False))[0],
            lambda clip: litert({CLIP_NAME: clip[None]})["logits"][0])


def random_input_difference(model, mode, model_content, seed=0):
    """max |LiteRT - Keras| / max |Keras| of the logits on one random clip."""
    clip = np.random.default_rng(seed).normal(size=tuple(model.input_shape[1:])).astype("float32")
    if mode == "online":
        clip = clip[:1]  # one frame from zero states
    keras_logits, litert_logits = (run(clip) for run in _runners(model, mode, model_content))
    return float(np.abs(litert_logits - keras_logits).max() / np.abs(keras_logits).max())


def held_out_clips(model, data_config=None, max_videos=32):
    """Normalised clips `(T, H, W, 3)` of the test split (the built-in dataset's without a data config)."""
    config = calibration.clip_config(data_config, model.frame_shape[:2], model.num_segments)
    return calibration.calibration_clips(config, "test", max_videos)


def compare_on_clips(model, mode, model_content, clips):
    """Top-1 agreement and logit error of LiteRT vs Keras over clips.

    Returns:
        dict: `videos`, `top1_agreement` (fraction of clips whose argmax
        is the same), `max_abs_error` / `mean_abs_error` of the logits and
        `max_relative_error` (max |LiteRT - Keras| / max |Keras|, per clip,
        the largest).
    """
    run_keras, run_litert = _runners(model, mode, model_content)
    agree, max_abs, mean_abs, relative = [], [], [], []
    for clip in clips:
        expected, actual = run_keras(clip), run_litert(clip)
        error = np.abs(actual - expected)
        agree.append(int(np.argmax(actual)) == int(np.argmax(expected)))
        max_abs.append(error.max())
        mean_abs.append(error.mean())
        relative.append(error.max() / np.abs(expected).max())
    if not agree:
        raise ValueError("no clips to compare on")
    return {
        "videos": len(agree),
        "top1_agreement": float(np.mean(agree)),
        "max_abs_error": float(np.max(max_abs)),
        "mean_abs_error": float(np.mean(mean_abs)),
        "max_relative_error": float(np.max(relative)),
    }
