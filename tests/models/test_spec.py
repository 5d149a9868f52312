"""`TSMSpec`: defaults, validation, dict round trips, and the models built from it."""

import dataclasses
import json
import zipfile

import keras
import numpy as np
import pytest
import yaml

import tsm_keras
from tsm_keras.models import TSM, OnlineTSM, TSMSpec, build_online, build_tsm
from tsm_keras.utils.config import ConfigError

SMALL = dict(backbone="mobilenet_v2", num_classes=5, num_segments=2, input_shape=(32, 32, 3))


def test_defaults_are_the_tsm_r50_recipe():
    assert TSMSpec().to_dict() == {
        "backbone": "resnet50", "num_classes": 400, "num_segments": 8, "shift_div": 8,
        "shift_place": "blockres", "direction": "bidirectional", "non_local": None,
        "temporal_pool": False, "layout": "keras", "input_shape": [224, 224, 3], "dropout": 0.5,
        "bn_momentum": 0.9, "init_std": 0.001, "backbone_options": {},
    }
    assert TSMSpec().input_shape == (224, 224, 3) and TSMSpec().shifts
    assert not TSMSpec(shift_div=0).shifts  # the TSN twin
    assert TSMSpec(backbone_options=None).backbone_options == {}  # the keyword form of earlier versions


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"backbone": "vgg16"}, "model.backbone: expected one of ['mobilenet_v2', 'mobileone_s0'"),
        ({"num_classes": 0}, "model.num_classes: expected a positive int, got 0"),
        ({"num_segments": 2.0}, "model.num_segments: expected a positive int, got 2.0"),
        ({"shift_div": -1}, "model.shift_div: expected a non-negative int, got -1"),
        ({"shift_place": "everywhere"}, "model.shift_place: expected one of ['blockres', 'block'], got 'everywhere'"),
        ({"direction": "forward"}, "model.direction: expected one of ['bidirectional', 'unidirectional']"),
        ({"non_local": "cosine"}, "model.non_local: expected one of ['dot_product', 'gaussian', 'embedded_gaussian']"
                                  " or null, got 'cosine'"),
        ({"temporal_pool": 1}, "model.temporal_pool: expected true or false, got 1"),
        ({"layout": "caffe"}, "model.layout: expected one of ['keras', 'torch'], got 'caffe'"),
        ({"input_shape": [32, 32]}, "model.input_shape: expected a list of 3 ints >= 1, got [32, 32]"),
        ({"dropout": 1.0}, "model.dropout: expected a number in [0, 1), got 1.0"),
        ({"bn_momentum": -0.1}, "model.bn_momentum: expected a number in [0, 1), got -0.1"),
        ({"init_std": 0}, "model.init_std: expected a number > 0, got 0"),
        ({"backbone_options": [1]}, "model.backbone_options: expected a mapping with string keys, got [1]"),
        # What the backbone supports is asked of its registration.
        ({"backbone": "mobilenet_v2", "non_local": "gaussian"},
         "model.non_local: expected null/false for backbone 'mobilenet_v2', got 'gaussian'"),
        ({"backbone": "mobilenet_v2", "temporal_pool": True},
         "model.temporal_pool: expected null/false for backbone 'mobilenet_v2', got True"),
        ({"backbone": "mobileone_s0", "layout": "keras", "shift_place": "block"},
         "model.layout: expected one of the layouts of 'mobileone_s0' ['torch'], got 'keras'"),
        ({"backbone": "mobileone_s0", "layout": "torch"},
         "model.shift_place: expected one of the shift places of 'mobileone_s0' ['block'], got 'blockres'"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(fields, message):
    with pytest.raises(ConfigError) as caught:
        TSMSpec(**fields)
    assert message in str(caught.value)
    assert str(caught.value).startswith("model.")


def test_supported_combinations_pass():
    assert TSMSpec(backbone="resnet50", non_local="gaussian", temporal_pool=True).non_local == "gaussian"
    # A TSN twin has no shift, so the placement does not matter to MobileOne.
    assert TSMSpec(backbone="mobileone_s0", layout="torch", shift_div=0).shift_place == "blockres"


def test_dict_round_trip_and_unknown_keys():
    spec = TSMSpec(backbone="resnet101", num_classes=174, num_segments=16, shift_place="block",
                   direction="unidirectional", layout="torch", input_shape=[256, 256, 3],
                   backbone_options={"note": 1})
    values = spec.to_dict()
    assert yaml.safe_load(yaml.safe_dump(values)) == values
    assert TSMSpec.from_dict(values) == spec
    assert TSMSpec.from_dict(json.loads(json.dumps(values))) == spec
    with pytest.raises(ConfigError, match=r"^model\.num_frames: unknown key"):
        TSMSpec.from_dict({**values, "num_frames": 8})
    assert spec.replace(num_classes=7) == TSMSpec.from_dict({**values, "num_classes": 7})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 3
    assert hash(spec) == hash(TSMSpec.from_dict(values))


def test_tsm_takes_the_spec_and_its_config_is_the_spec_dict():
    spec = TSMSpec(**SMALL)
    model = TSM(spec)
    assert model.spec is spec and model.name == "tsm_mobilenet_v2"
    assert model.get_config() == {"name": "tsm_mobilenet_v2", "trainable": True, **spec.to_dict()}
    assert TSM.from_config(model.get_config()).spec == spec
    # The keyword form, the positional backbone and build_tsm all build the same spec.
    assert TSM(**SMALL).spec == spec
    assert TSM("mobilenet_v2", **{k: v for k, v in SMALL.items() if k != "backbone"}).spec == spec
    assert build_tsm(**SMALL).spec == spec
    assert build_tsm(**SMALL, shift=False).spec == spec.replace(shift_div=0)
    # Attributes read the spec; frame_shape is the spec's input_shape.
    assert (model.backbone, model.num_segments, model.frame_shape, model.shift_div) == ("mobilenet_v2", 2,
                                                                                           (32, 32, 3), 8)
    with pytest.raises(ValueError, match="either a TSMSpec or its fields"):
        TSM(spec, num_classes=3)
    with pytest.raises(ConfigError, match="model.num_classes"):
        build_tsm("mobilenet_v2", 0)


def replace_saved_config(path, config):
    """Rewrites the model config inside a `.keras` zip."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    saved = json.loads(files["config.json"])
    saved["config"] = config
    files["config.json"] = json.dumps(saved).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_keras_file_with_the_flat_config_of_earlier_versions_loads(tmp_path):
    """`.keras` files saved before the spec hold the 14 fields flat, in their old order."""
    model = build_tsm(**SMALL, direction="unidirectional")
    clips = np.random.default_rng(0).normal(size=(1, 2, 32, 32, 3)).astype("float32")
    path = str(tmp_path / "old.keras")
    model.save(path)
    replace_saved_config(path, {
        "name": "tsm_mobilenet_v2", "trainable": True, "backbone": "mobilenet_v2", "num_classes": 5,
        "num_segments": 2, "shift_div": 8, "shift_place": "blockres", "direction": "unidirectional",
        "non_local": None, "temporal_pool": False, "layout": "keras", "input_shape": [32, 32, 3],
        "dropout": 0.5, "bn_momentum": 0.9, "init_std": 0.001, "backbone_options": {},
    })
    loaded = keras.saving.load_model(path)  # safe mode
    assert isinstance(loaded, TSM) and loaded.spec == model.spec
    np.testing.assert_array_equal(loaded.predict(clips, verbose=0), model.predict(clips, verbose=0))

    # The online model's earlier config had no direction (it was always uni-directional).
    online = build_online(model)
    online_path = str(tmp_path / "old_online.keras")
    online.save(online_path)
    replace_saved_config(online_path, {
        "name": "online_tsm_mobilenet_v2", "trainable": True, "backbone": "mobilenet_v2", "num_classes": 5,
        "shift_div": 8, "shift_place": "blockres", "layout": "keras", "input_shape": [32, 32, 3],
        "bn_momentum": 0.9, "backbone_options": {}, "batch_size": 1,
    })
    loaded_online = keras.saving.load_model(online_path)
    assert isinstance(loaded_online, OnlineTSM) and loaded_online.state_names == online.state_names
    frame = clips[:, 0]
    inputs = {"image": frame, **online.init_states()}
    np.testing.assert_array_equal(np.asarray(loaded_online(inputs)["logits"]), np.asarray(online(inputs)["logits"]))


def test_online_model_keeps_the_offline_spec_and_head():
    model = build_tsm(**SMALL, direction="unidirectional")
    online = build_online(model)
    assert online.spec == model.spec and online.name == "online_tsm_mobilenet_v2"
    assert OnlineTSM.from_config(online.get_config()).spec == model.spec
    # One classifier head: same layer names and kernel shapes; the online model has no dropout.
    for name in ("avg_pool", "fc_cls"):
        assert type(online.get_layer(name)) is type(model.get_layer(name))
    np.testing.assert_array_equal(online.get_layer("fc_cls").get_weights()[0], model.get_layer("fc_cls").get_weights()[0])
    assert "dropout" in [layer.name for layer in model.layers]
    assert "dropout" not in [layer.name for layer in online.layers]


def test_public_names():
    assert tsm_keras.TSMSpec is TSMSpec and tsm_keras.OnlineTSM is OnlineTSM
    from tsm_keras.export import OnlineTSM as exported, build_online as exported_build

    assert exported is OnlineTSM and exported_build is build_online
