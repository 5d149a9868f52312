"""Training configs: YAML -> validated dataclasses, overrides, `base:` chains, bad input refused."""

import importlib.util
import os

import pytest
import yaml

from tsm_keras.training.config import Config, ConfigError, apply_overrides, load_config, parse_override

from tests import REPO_ROOT

CONFIG_DIR = os.path.join(REPO_ROOT, "configs")

MINIMAL = {
    "model": {"backbone": "mobilenet_v2", "num_classes": 4},
    "data": {"source": "synthetic", "synthetic": {"num_classes": 4}, "resize_short": None, "crop_size": 32},
    "schedule": {"milestones": [2], "warmup_epochs": 1},
    "train": {"epochs": 3},
}


def write(tmp_path, values, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_defaults_are_the_mmaction2_r50_recipe():
    config = Config.from_dict({"data": {"source": "synthetic", "synthetic": {"num_classes": 10}},
                               "model": {"num_classes": 10}})
    assert config.model.backbone == "resnet50"
    assert (config.optimizer.lr, config.optimizer.momentum, config.optimizer.weight_decay) == (0.02, 0.9, 1e-4)
    assert (config.optimizer.classifier_weight_lr_mult, config.optimizer.classifier_bias_lr_mult,
            config.optimizer.bias_lr_mult) == (5.0, 10.0, 2.0)
    assert config.optimizer.clip_grad_norm == 20.0
    assert config.schedule.milestones == (25, 45) and config.schedule.warmup_epochs == 5.0
    assert config.schedule.warmup_start_factor == 0.1
    assert config.train.epochs == 50 and config.train.base_batch_size == 128
    assert config.model.dropout == 0.5 and config.model.init_std == 0.001


def test_model_spec_takes_segments_and_frame_size_from_data():
    config = Config.from_dict(MINIMAL)
    spec = config.model_spec()
    assert spec.num_segments == config.data.num_frames_per_clip == 8
    assert spec.input_shape == (32, 32, 3)
    assert config.model_spec(input_size=48).input_shape == (48, 48, 3)
    assert (spec.backbone, spec.num_classes, spec.shift_div) == ("mobilenet_v2", 4, 8)
    tsn = Config.from_dict({**MINIMAL, "model": {**MINIMAL["model"], "shift": False}})
    assert tsn.model_spec().shift_div == 0


def test_round_trip_through_yaml(tmp_path):
    config = Config.from_dict(MINIMAL)
    again = load_config(write(tmp_path, yaml.safe_load(config.to_yaml())))
    assert again == config


@pytest.mark.parametrize("name", ["bfloat16", "mixed_bfloat16"])
def test_bfloat16_and_its_keras_name_are_one_precision(tmp_path, name):
    """`bfloat16` is the documented name; configs written with Keras' `mixed_bfloat16` load as it."""
    from tsm_keras.models.precision import dtype_policy

    config = load_config(write(tmp_path, {**MINIMAL, "train": {**MINIMAL["train"], "precision": name}}))
    assert config.train.precision == "bfloat16" and dtype_policy(config.train.precision) == "mixed_bfloat16"
    assert yaml.safe_load(config.to_yaml())["train"]["precision"] == "bfloat16"
    overridden = load_config(write(tmp_path, MINIMAL, "plain.yaml"), [f"train.precision={name}"])
    assert overridden == config


@pytest.mark.parametrize("value", ["float16", "bf16", 16, None])
def test_a_bad_precision_is_refused_naming_train_precision(tmp_path, value):
    path = write(tmp_path, {**MINIMAL, "train": {**MINIMAL["train"], "precision": value}})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert (f"train.precision: expected one of ['float32', 'bfloat16', 'mixed_float16'] "
            f"(or 'mixed_bfloat16' for 'bfloat16'), got {value!r}") in str(error.value)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("optimizer", "lrr", 0.1, "optimizer.lrr: unknown key"),
        ("optimizer", "lr", -0.1, "optimizer.lr: expected a number > 0"),
        ("optimizer", "lr", "fast", "optimizer.lr: expected a number > 0, got 'fast'"),
        ("optimizer", "momentum", 1.0, "optimizer.momentum: expected a number in [0, 1)"),
        ("optimizer", "clip_grad_norm", 0, "optimizer.clip_grad_norm: expected a number > 0"),
        ("model", "backbone", "resnet51", "model.backbone: expected one of"),
        ("model", "dropout", 1.0, "model.dropout: expected a number in [0, 1)"),
        ("model", "shift", "yes", "model.shift: expected true or false"),
        ("model", "non_local", "cosine", "model.non_local: expected one of"),
        ("train", "epochs", 2.5, "train.epochs: expected an int >= 1"),
        ("train", "batch_per_replica", 0, "train.batch_per_replica: expected an int >= 1"),
        ("train", "precision", "float16", "train.precision: expected one of"),
        ("schedule", "policy", "step", "schedule.policy: expected one of"),
        ("schedule", "milestones", [2, 1], "schedule.milestones: expected a list of ints >= 1 in increasing"),
        ("checkpoint", "keep_last", 0, "checkpoint.keep_last: expected an int >= 1"),
        ("test", "average", "mean", "test.average: expected one of ['prob', 'logit']"),
        ("data", "crop_size", "big", "data.crop_size: expected a positive int"),
        ("data", "num_clipz", 8, "data.num_clipz: unknown option"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, section, key, value, message):
    values = yaml.safe_load(yaml.safe_dump(MINIMAL))
    values.setdefault(section, {})[key] = value
    path = write(tmp_path, values)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(error.value).startswith(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_classes=6", "model.num_classes: expected 4 (data.synthetic.num_classes), got 6"),
        ("schedule.milestones=[3]", "schedule.milestones: expected epochs < train.epochs (3), got [3]"),
        ("schedule.warmup_epochs=4", "schedule.warmup_epochs: expected at most train.epochs (3)"),
        ("train.val_interval=0", "checkpoint.save_best: expected false when train.val_interval is 0"),
        ("model.non_local=gaussian", "model.non_local: expected null/false for backbone 'mobilenet_v2'"),
        ("trainer.epochs=3", "trainer: unknown section"),
        ("optimizer=0.1", "expected section.key=value"),
        ("optimizer.lr.base=0.1", "optimizer.lr is 0.02, not a section"),
    ],
)
def test_impossible_combinations_and_bad_overrides_are_refused(tmp_path, override, message):
    values = dict(MINIMAL, optimizer={"lr": 0.02})
    with pytest.raises(ConfigError, match=".*") as error:
        load_config(write(tmp_path, values), [override])
    assert message in str(error.value)


def test_overrides_parse_values_as_yaml(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        ["optimizer.lr=0.5", "schedule.milestones=[1, 2]", "model.weights=null", "model.shift=false",
         "data.synthetic.frame_size=48", "train.seed=7"],
    )
    assert config.optimizer.lr == 0.5 and config.schedule.milestones == (1, 2)
    assert config.model.weights is None and config.model.shift is False
    assert config.data.synthetic.frame_size == 48 and config.train.seed == 7
    assert parse_override("a.b=") == (["a", "b"], None)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_base_chain_merges_sections_key_by_key(tmp_path):
    write(tmp_path, MINIMAL, "parent.yaml")
    write(tmp_path, {"base": "parent.yaml", "model": {"shift": False}, "train": {"epochs": 4}}, "child.yaml")
    config = load_config(str(tmp_path / "child.yaml"))
    assert config.model.shift is False and config.model.backbone == "mobilenet_v2"
    assert config.train.epochs == 4 and config.schedule.milestones == (2,)


def test_circular_base_and_missing_files_are_refused(tmp_path):
    write(tmp_path, {"base": "b.yaml"}, "a.yaml")
    write(tmp_path, {"base": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="circular 'base' chain"):
        load_config(str(tmp_path / "a.yaml"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(str(tmp_path / "list.yaml"))


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"train_{name}", os.path.join(REPO_ROOT, "train", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["fit", "test"])
def test_cli_refuses_a_bad_config_before_any_work(tmp_path, capsys, script):
    """`train/fit.py` and `train/test.py` exit with status 2 naming the key; nothing is written."""
    path = write(tmp_path, MINIMAL)
    work_dir = tmp_path / "work"
    arguments = ["--config", path, "--set", "optimizer.weight_decay=-1"]
    arguments += ["--work-dir", str(work_dir)] if script == "fit" else ["--checkpoint", str(work_dir)]
    assert load_script(script).main(arguments) == 2
    assert "optimizer.weight_decay: expected a number >= 0, got -1" in capsys.readouterr().err
    assert not work_dir.exists()


@pytest.mark.parametrize("name", sorted(name for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml")))
def test_every_shipped_config_loads(name):
    config = load_config(os.path.join(CONFIG_DIR, name))
    assert config.model.num_classes >= 2


# name: (backbone, T, epochs, weight decay, milestones, warmup epochs, clips x crops at test, test crop size)
SEED_ROWS = {
    "tsm_r50_1x1x8_50e_kinetics400.yaml": ("resnet50", 8, 50, 1e-4, (25, 45), 5, (1, 10), 224),
    "tsm_r50_1x1x16_50e_kinetics400.yaml": ("resnet50", 16, 50, 1e-4, (25, 45), 5, (1, 10), 224),
    "tsm_r50_dense_1x1x8_50e_kinetics400.yaml": ("resnet50", 8, 50, 1e-4, (25, 45), 5, (10, 10), 224),
    "tsm_r50_nl_dot_product_1x1x8_50e_kinetics400.yaml": ("resnet50", 8, 50, 1e-4, (25, 45), 5, (1, 10), 224),
    "tsm_r50_nl_gaussian_1x1x8_50e_kinetics400.yaml": ("resnet50", 8, 50, 1e-4, (25, 45), 5, (1, 10), 224),
    "tsm_r50_nl_embedded_gaussian_1x1x8_50e_kinetics400.yaml":
        ("resnet50", 8, 50, 1e-4, (25, 45), 5, (1, 10), 224),
    "tsm_mobilenetv2_1x1x8_100e_kinetics400.yaml": ("mobilenet_v2", 8, 100, 2e-5, (40, 80), 0, (1, 3), 256),
    "tsm_mobileone_s4_1x1x16_50e_kinetics400.yaml": ("mobileone_s4", 16, 50, 2e-5, (25, 45), 5, (1, 3), 256),
    "tsm_r50_1x1x8_50e_sthv2.yaml": ("resnet50", 8, 50, 5e-4, (25, 45), 5, (2, 3), 256),
    "tsm_r50_1x1x16_50e_sthv2.yaml": ("resnet50", 16, 50, 5e-4, (25, 45), 5, (2, 3), 256),
    "tsm_r101_1x1x8_50e_sthv2.yaml": ("resnet101", 8, 50, 5e-4, (25, 45), 5, (2, 3), 256),
}


@pytest.mark.parametrize("name", sorted(SEED_ROWS))
def test_seed_rows_carry_the_reference_recipe(name):
    """The recipe and test protocol of each row (docs/reference.md#training-recipes)."""
    from tsm_keras.data import resolve_flip_label_map

    backbone, frames, epochs, weight_decay, milestones, warmup, views, test_size = SEED_ROWS[name]
    config = load_config(os.path.join(CONFIG_DIR, name))
    assert config.model.backbone == backbone and config.data.num_frames_per_clip == frames
    assert config.train.epochs == epochs and config.optimizer.weight_decay == weight_decay
    assert config.schedule.policy == "multistep" and config.schedule.milestones == milestones
    assert config.schedule.warmup_epochs == warmup and config.schedule.gamma == 0.1
    if warmup:
        assert config.schedule.warmup_start_factor == 0.1
    assert (config.data.num_test_clips, config.data.num_test_crops) == views
    assert config.data.view_crop_size == test_size and config.data.crop_size == 224
    assert (config.optimizer.lr, config.optimizer.momentum, config.optimizer.clip_grad_norm) == (0.02, 0.9, 20.0)
    assert (config.optimizer.classifier_weight_lr_mult, config.optimizer.classifier_bias_lr_mult,
            config.optimizer.bias_lr_mult) == (5.0, 10.0, 2.0)
    assert config.train.batch_per_replica * 8 == config.train.base_batch_size == 128
    assert config.model.dropout == 0.5 and config.model.init_std == 0.001 and config.test.average == "prob"
    assert config.data.train_crop == "multiscale" and config.data.flip
    assert config.data.mean == (123.675, 116.28, 103.53) and config.data.std == (58.395, 57.12, 57.375)
    if "nl_" in name:
        assert config.model.non_local == name.split("nl_")[1].split("_1x1x8")[0]
    if "dense" in name:
        assert config.data.dense and config.data.dense_sample_range == 64
    flips = resolve_flip_label_map(config.data)
    if name.endswith("sthv2.yaml"):
        assert config.model.num_classes == 174
        assert {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166} == flips
    else:
        assert config.model.num_classes == 400 and flips == {}


def test_num_classes_must_match_the_label_map_of_file_based_data(tmp_path):
    """A 2-name label map with an inherited `num_classes: 10` is refused, naming both."""
    (tmp_path / "labels.txt").write_text("open\nclose\n")
    (tmp_path / "train.txt").write_text("a.mp4 0\n")
    base = {"model": {"backbone": "mobilenet_v2", "num_classes": 10}, "schedule": {"milestones": [2]},
            "train": {"epochs": 6}}
    write(tmp_path, base, "base.yaml")
    child = {"base": "base.yaml", "data": {"source": "video", "train_list": str(tmp_path / "train.txt"),
                                           "label_map": str(tmp_path / "labels.txt")}}
    path = write(tmp_path, child, "child.yaml")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"model.num_classes: expected 2 (the classes of data.label_map '{tmp_path / 'labels.txt'}'), got 10" \
        in str(error.value)
    assert load_config(path, ["model.num_classes=2"]).model.num_classes == 2
    with pytest.raises(ConfigError, match=r"data\.label_map: label map .*missing\.txt"):
        load_config(path, ["model.num_classes=2", f"data.label_map={tmp_path / 'missing.txt'}"])


def test_resolved_config_drops_the_synthetic_block_of_a_base(tmp_path):
    write(tmp_path, MINIMAL, "parent.yaml")
    child = {"base": "parent.yaml", "data": {"source": "video", "train_list": "train.txt"}}
    config = load_config(write(tmp_path, child, "child.yaml"))
    assert "synthetic" not in config.to_dict()["data"]
    assert "synthetic" in Config.from_dict(MINIMAL).to_dict()["data"]  # kept when it is used
    again = load_config(write(tmp_path, yaml.safe_load(config.to_yaml()), "again.yaml"))
    assert again.to_dict() == config.to_dict()


def test_base_path_may_be_absolute(tmp_path):
    parent = write(tmp_path, MINIMAL, "parent.yaml")
    (tmp_path / "sub").mkdir()
    child = write(tmp_path, {"base": parent, "train": {"epochs": 4}}, "sub/child.yaml")
    assert load_config(child).train.epochs == 4
