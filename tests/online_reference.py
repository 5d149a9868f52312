"""Offline and online logits of one clip, for the online-vs-offline parity tests.

- `per_frame_logits(model, clip)`: the offline TSM's per-frame logits (before consensus).
- `run_online(online, clip)`: the online model fed frame by frame, carrying its states.
- `relative_error(actual, expected)`: max abs difference over max abs expected.
"""

import keras
import numpy as np


def per_frame_logits(model, clip):
    """Offline per-frame logits: the TSM up to its classifier, before consensus."""
    frames = keras.Model(model.input, model.get_layer("fc_cls").output)
    return np.asarray(frames(clip, training=False))


def run_online(online, clip):
    """Feeds `clip` (1, T, H, W, 3) frame by frame, carrying the states."""
    states = online.init_states()
    logits = []
    for t in range(clip.shape[1]):
        outputs = online({"image": clip[:, t], **states}, training=False)
        logits.append(np.asarray(outputs["logits"])[0])
        states = {name: np.asarray(outputs[name]) for name in online.state_names}
    return np.stack(logits)


def relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()
