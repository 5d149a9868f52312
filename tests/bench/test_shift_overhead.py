"""The shift bench's floor network: the TSM with one pass over the input in place of each shift."""

import keras
import numpy as np

from bench.shift_overhead import OnePass, with_one_pass_shifts
from tsm_keras import TemporalShift, build_tsm


def test_one_pass_network_computes_the_tsn_and_keeps_the_weights():
    kwargs = dict(num_classes=3, num_segments=4, input_shape=(32, 32, 3), layout="torch")
    tsm = build_tsm("mobilenet_v2", **kwargs)
    tsn = build_tsm("mobilenet_v2", shift=False, **kwargs)
    tsn.set_weights(tsm.get_weights())
    floor = with_one_pass_shifts(tsm)
    shifts = [layer for layer in tsm.layers if isinstance(layer, TemporalShift)]
    passes = [layer for layer in floor.layers if isinstance(layer, OnePass)]
    assert len(passes) == len(shifts) > 0
    assert not any(isinstance(layer, TemporalShift) for layer in floor.layers)
    clips = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(tsn(clips, training=False))  # untrained: tiny logits, compare relatively
    scale = np.abs(expected).max()
    assert np.abs(keras.ops.convert_to_numpy(floor(clips, training=False)) - expected).max() <= 1e-5 * scale
    assert np.abs(keras.ops.convert_to_numpy(tsm(clips, training=False)) - expected).max() > 1e-3 * scale
