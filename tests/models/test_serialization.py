"""Every Keras object of the package survives get_config/from_config and a `.keras` file (safe mode).

The checks are those of Keras' own layer tests (`round_trip` in tests/conftest.py):
same config after `from_config` and after `keras.saving` serialization, same outputs
from the clone with the same weights, same outputs after saving and loading.
"""

import keras
import numpy as np
import pytest

from tsm_keras import MergeSegments, NonLocal, SegmentConsensus, TemporalPool, TemporalShift, build_online
from tsm_keras.export import OnlineTemporalShift

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.normal(size=shape).astype("float32")


LAYERS = {
    "shift_bidirectional": (lambda: TemporalShift(4, shift_div=4, name="shift"), normal(8, 3, 3, 16)),
    "shift_unidirectional": (lambda: TemporalShift(4, direction="unidirectional"), normal(8, 3, 3, 16)),
    "merge_segments": (MergeSegments, normal(2, 4, 3, 3, 3)),
    "consensus": (lambda: SegmentConsensus(4), normal(8, 5)),
    "temporal_pool": (lambda: TemporalPool(5), normal(10, 3, 3, 4)),
    "non_local_embedded_gaussian": (lambda: NonLocal(2, mode="embedded_gaussian"), normal(4, 4, 4, 8)),
    "non_local_gaussian": (lambda: NonLocal(2, mode="gaussian"), normal(4, 4, 4, 8)),
    "non_local_dot_product": (lambda: NonLocal(2, mode="dot_product"), normal(4, 4, 4, 8)),
    "online_shift": (lambda: OnlineTemporalShift(shift_div=8), [normal(1, 3, 3, 2), normal(1, 3, 3, 17)]),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_round_trip(name, round_trip, tmp_path):
    make, inputs = LAYERS[name]
    layer = make()
    layer(inputs)
    # Random weights everywhere (a fresh Non-local block is the identity: its BN gamma is 0).
    layer.set_weights([rng.uniform(0.5, 1.5, np.shape(w)).astype("float32") for w in layer.get_weights()])
    loaded = round_trip(layer, inputs, tmp_path)
    assert loaded.compute_output_shape(keras.tree.map_structure(np.shape, inputs)) == keras.tree.map_structure(
        np.shape, layer(inputs)
    )


@pytest.mark.parametrize("direction", ["bidirectional", "unidirectional"])
def test_tsm_round_trip(direction, tiny_tsm, round_trip, tmp_path):
    model = tiny_tsm(direction=direction, shift_place="block")
    clips = normal(2, 4, 32, 32, 3)
    loaded = round_trip(model, clips, tmp_path)
    assert (loaded.direction, loaded.shift_place, loaded.num_segments) == (direction, "block", 4)


def test_online_tsm_round_trip(tiny_tsm, round_trip, tmp_path):
    online = build_online(tiny_tsm(direction="unidirectional"))
    inputs = {"image": normal(1, 32, 32, 3)}
    inputs.update({name: normal(*state.shape) for name, state in online.init_states().items()})
    loaded = round_trip(online, inputs, tmp_path)
    assert loaded.state_names == online.state_names
