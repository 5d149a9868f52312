"""DataConfig: validated construction from plain dicts (the YAML `data:` section)."""

import pytest

from tsm_keras.data import DataConfig, SyntheticConfig


def test_defaults_are_the_mmaction2_tsm_recipe():
    config = DataConfig()
    assert (config.clip_len, config.frame_interval, config.num_clips) == (1, 1, 8)
    assert config.resize_short == 256 and config.crop_size == 224
    assert config.train_crop == "multiscale"
    assert config.multiscale_scales == (1.0, 0.875, 0.75, 0.66)
    assert config.mean == (123.675, 116.28, 103.53) and config.std == (58.395, 57.12, 57.375)
    assert config.num_frames_per_clip == 8 and config.num_test_views == 1


def test_round_trip_through_plain_dict():
    config = DataConfig.from_dict({
        "source": "frames", "train_list": "train.txt", "data_root": "data/rawframes", "test_crop": "ten",
        "twice_sample": True, "flip_label_map": {"86": 87, 87: 86}, "synthetic": {"num_classes": 4},
    })
    assert config.flip_label_map == {86: 87, 87: 86}  # YAML string keys become ints
    assert config.num_test_views == 2 * 10
    assert config.frame_start_index == 1  # MMAction2 rawframes start at img_00001
    again = DataConfig.from_dict(config.to_dict())
    assert again == config
    assert isinstance(again.synthetic, SyntheticConfig) and again.synthetic.num_classes == 4


@pytest.mark.parametrize(
    "values, message",
    [
        ({"crop_size": -3}, "data.crop_size: expected a positive int, got -3"),
        ({"crop_size": "224"}, "data.crop_size: expected a positive int, got '224'"),
        ({"crop_size": True}, "data.crop_size: expected a positive int"),
        ({"num_clips": 0}, "data.num_clips: expected a positive int, got 0"),
        ({"cropsize": 224}, "data.cropsize: unknown option"),
        ({"source": "webdataset"}, "data.source: expected one of"),
        ({"train_crop": "random"}, "data.train_crop: expected one of"),
        ({"test_crop": "five"}, "data.test_crop: expected one of"),
        ({"on_error": "ignore"}, "data.on_error: expected one of"),
        ({"flip": "yes"}, "data.flip: expected true or false, got 'yes'"),
        ({"mean": [1, 2]}, "data.mean: expected a list of numbers of length 3"),
        ({"std": [1, 0, 1]}, "data.std: expected a list of numbers of length 3 > 0.0"),
        ({"multiscale_scales": [1, 1.5]}, "data.multiscale_scales: expected a list of numbers in (0.0, 1.0]"),
        ({"random_resized_area": [0.9, 0.1]}, "data.random_resized_area: expected [low, high]"),
        ({"crop_size": 300}, "data.crop_size: expected at most resize_short (256), got 300"),
        ({"test_crop": "three", "test_crop_size": 224}, "data.test_crop_size: expected equal to resize_short"),
        ({"flip_label_map": {1: 2, 2: 3}}, "data.flip_label_map: expected a symmetric mapping"),
        ({"flip_label_map": {1: -2}}, "data.flip_label_map: expected a mapping of non-negative int labels"),
        ({"num_parallel_calls": 0}, "data.num_parallel_calls: expected a positive int or -1"),
        ({"dense": True, "twice_sample": True}, "data.twice_sample: expected false when dense"),
        ({"filename_tmpl": "img.jpg"}, None),  # no field is fine for str.format; checked below
        ({"synthetic": {"num_classes": 3}}, "data.synthetic.num_classes: expected an even int in [2, 10]"),
        ({"synthetic": {"frames": 8}}, "data.synthetic.frames: unknown option"),
        ({"synthetic": {"frame_size": 8}}, "data.synthetic.frame_size: expected an int >= 16, got 8"),
        ({"source": "video"}, "data.train_list: expected an annotation list for source 'video'"),
        ({"synthetic": 5}, "data.synthetic: expected a mapping of options, got 5"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values, message):
    if message is None:
        DataConfig.from_dict(values)
        return
    with pytest.raises(ValueError) as caught:
        DataConfig.from_dict(values)
    assert message in str(caught.value)


def test_filename_template_needs_a_positional_field():
    with pytest.raises(ValueError, match=r"data.filename_tmpl: expected a str.format template"):
        DataConfig.from_dict({"filename_tmpl": "img_{name}.jpg"})


def test_not_a_mapping_is_refused():
    with pytest.raises(ValueError, match=r"^data: expected a mapping"):
        DataConfig.from_dict(["source", "synthetic"])


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match=r"data.crop_size"):
        DataConfig(crop_size=0)
    assert DataConfig(synthetic={"num_classes": 6}).synthetic.num_classes == 6


def test_replace_returns_a_validated_copy():
    config = DataConfig()
    smaller = config.replace(crop_size=112, resize_short=128)
    assert (smaller.crop_size, config.crop_size) == (112, 224)
    with pytest.raises(ValueError, match="data.crop_size"):
        config.replace(crop_size=-1)
