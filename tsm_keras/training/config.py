"""Declarative training configuration: YAML validated into dataclasses.

A training config is a YAML mapping with the sections `model`, `data`,
`optimizer`, `schedule`, `train`, `checkpoint` and `test` (every section and
every key is optional; the defaults are the MMAction2 TSM-R50 recipe). The
`data` section is `tsm_keras.data.DataConfig`. A config may start from another
with `base: other.yaml` (path relative to the file): mappings are merged key by
key, every other value replaces the base's.

`load_config(path, overrides)` is the only entry point: it reads the file,
applies `--set section.key=value` overrides (values parsed as YAML) and
validates everything, so an unknown key, a wrong type or an impossible value
raises `ConfigError` naming the key (`optimizer.lr: expected a number > 0,
got -1`) before any work starts.
"""

import dataclasses
import math
import os
from typing import Optional

import yaml

from tsm_keras.data import DataConfig

SCHEDULE_POLICIES = ("multistep", "cosine")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
TEST_AVERAGES = ("prob", "logit")
SPLITS = ("train", "val", "test")
VAL_PROTOCOLS = ("center", "test")
SHIFT_PLACES = ("blockres", "block")
DIRECTIONS = ("bidirectional", "unidirectional")
NON_LOCAL_MODES = ("dot_product", "gaussian", "embedded_gaussian")
LAYOUTS = ("keras", "torch")


class ConfigError(ValueError):
    """A config key that is unknown, of the wrong type or of an impossible value."""


class _Check:
    """Type and range checks of one config section; errors name `section.key`."""

    def __init__(self, section):
        self.section = section

    def fail(self, key, expected, value):
        raise ConfigError(f"{self.section}.{key}: expected {expected}, got {value!r}")

    def int_(self, key, value, minimum=None, optional=False):
        if value is None and optional:
            return None
        expected = "an int" + ("" if minimum is None else f" >= {minimum}") + (" or null" if optional else "")
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            self.fail(key, expected, value)
        return value

    def float_(self, key, value, low=None, high=None, low_open=False, high_open=False, optional=False):
        if value is None and optional:
            return None
        expected = "a number" + _interval(low, high, low_open, high_open) + (" or null" if optional else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, expected, value)
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(key, expected, value)
        if high is not None and (value > high or (high_open and value == high)):
            self.fail(key, expected, value)
        return float(value)

    def bool_(self, key, value):
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def choice(self, key, value, choices, optional=False):
        if value is None and optional:
            return None
        if not isinstance(value, str) or value not in choices:
            self.fail(key, f"one of {list(choices)}" + (" or null" if optional else ""), value)
        return value

    def str_(self, key, value, optional=False):
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, "a non-empty string" + (" or null" if optional else ""), value)
        return value

    def mapping(self, key, value):
        if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
            self.fail(key, "a mapping with string keys", value)
        return dict(value)

    def int_list(self, key, value, minimum=None, increasing=False):
        expected = "a list of ints" + ("" if minimum is None else f" >= {minimum}")
        expected += " in increasing order" if increasing else ""
        if not isinstance(value, (list, tuple)):
            self.fail(key, expected, value)
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or (minimum is not None and item < minimum):
                self.fail(key, expected, value)
        if increasing and any(later <= earlier for earlier, later in zip(value, value[1:])):
            self.fail(key, expected, value)
        return tuple(value)


def _interval(low, high, low_open, high_open):
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


class _Section:
    """Shared `from_dict` / `to_dict` of the config sections."""

    SECTION = ""

    @classmethod
    def from_dict(cls, values):
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{cls.SECTION}: expected a mapping of options, got {values!r}")
        known = [field.name for field in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{cls.SECTION}.{key}: unknown key (known keys: {', '.join(known)})"
                )
        section = cls(**values)
        section.validate(_Check(cls.SECTION))
        return section

    def to_dict(self):
        values = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


@dataclasses.dataclass
class ModelConfig(_Section):
    """The `model:` section: the arguments of `tsm_keras.models.build_tsm`.

    `num_segments` and `input_shape` are not listed: they are the data's
    `num_frames_per_clip` and `(crop_size, crop_size, 3)`.

    Args:
        backbone: registered backbone name (`resnet50`, `resnet101`,
            `mobilenet_v2`, `mobileone_s4`, ...).
        num_classes: classifier size.
        shift: false builds the TSN twin (no temporal shift).
        shift_div, shift_place, direction, non_local, temporal_pool, layout,
        dropout, bn_momentum, init_std, backbone_options: see `TSM`.
        weights: backbone initialisation (`"imagenet"` or a
            `keras.applications` weight file), or null for random.
        partial_bn: freeze the statistics and affine parameters of every
            backbone BatchNorm but the first (TSN / TSM "partial BN").
    """

    SECTION = "model"

    backbone: str = "resnet50"
    num_classes: int = 400
    shift: bool = True
    shift_div: int = 8
    shift_place: str = "blockres"
    direction: str = "bidirectional"
    non_local: Optional[str] = None
    temporal_pool: bool = False
    layout: str = "keras"
    weights: Optional[str] = None
    dropout: float = 0.5
    bn_momentum: float = 0.9
    init_std: float = 0.001
    backbone_options: dict = dataclasses.field(default_factory=dict)
    partial_bn: bool = False

    def validate(self, check):
        from tsm_keras.models import BACKBONES

        check.choice("backbone", self.backbone, sorted(BACKBONES))
        spec = BACKBONES[self.backbone]
        check.int_("num_classes", self.num_classes, minimum=1)
        check.bool_("shift", self.shift)
        check.int_("shift_div", self.shift_div, minimum=1)
        check.choice("shift_place", self.shift_place, SHIFT_PLACES)
        check.choice("direction", self.direction, DIRECTIONS)
        check.choice("non_local", self.non_local, NON_LOCAL_MODES, optional=True)
        check.bool_("temporal_pool", self.temporal_pool)
        check.choice("layout", self.layout, LAYOUTS)
        check.str_("weights", self.weights, optional=True)
        self.dropout = check.float_("dropout", self.dropout, 0.0, 1.0, high_open=True)
        self.bn_momentum = check.float_("bn_momentum", self.bn_momentum, 0.0, 1.0, high_open=True)
        self.init_std = check.float_("init_std", self.init_std, 0.0, low_open=True)
        self.backbone_options = check.mapping("backbone_options", self.backbone_options)
        check.bool_("partial_bn", self.partial_bn)
        for key, supported in (
            ("non_local", spec.supports_non_local),
            ("temporal_pool", spec.supports_temporal_pool),
        ):
            if getattr(self, key) and not supported:
                check.fail(key, f"null/false for backbone {self.backbone!r}", getattr(self, key))

    def build_kwargs(self, data):
        """Keyword arguments of `build_tsm` for clips produced by `data`."""
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "num_segments": data.num_frames_per_clip,
            "shift_div": self.shift_div,
            "shift_place": self.shift_place,
            "direction": self.direction,
            "non_local": self.non_local,
            "temporal_pool": self.temporal_pool,
            "layout": self.layout,
            "weights": self.weights,
            "input_shape": (data.crop_size, data.crop_size, 3),
            "dropout": self.dropout,
            "shift": self.shift,
            "bn_momentum": self.bn_momentum,
            "init_std": self.init_std,
            "backbone_options": dict(self.backbone_options) or None,
        }


@dataclasses.dataclass
class OptimizerConfig(_Section):
    """The `optimizer:` section: SGD with the TSM parameter groups.

    `weight_decay` is PyTorch-style L2 (added to the gradient before the
    momentum), applied to conv / linear weights only.

    Args:
        lr: base learning rate for `train.base_batch_size` clips per step.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 coefficient.
        classifier_weight_lr_mult: lr multiplier of the classifier weight.
        classifier_bias_lr_mult: lr multiplier of the classifier bias.
        bias_lr_mult: lr multiplier of the other biases.
        clip_grad_norm: clip the (all-replica) gradient to this global norm;
            null disables clipping.
    """

    SECTION = "optimizer"

    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    classifier_weight_lr_mult: float = 5.0
    classifier_bias_lr_mult: float = 10.0
    bias_lr_mult: float = 2.0
    clip_grad_norm: Optional[float] = 20.0

    def validate(self, check):
        self.lr = check.float_("lr", self.lr, 0.0, low_open=True)
        self.momentum = check.float_("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check.bool_("nesterov", self.nesterov)
        if self.nesterov and self.momentum == 0:
            check.fail("nesterov", "false when momentum is 0", self.nesterov)
        self.weight_decay = check.float_("weight_decay", self.weight_decay, 0.0)
        for key in ("classifier_weight_lr_mult", "classifier_bias_lr_mult", "bias_lr_mult"):
            setattr(self, key, check.float_(key, getattr(self, key), 0.0))
        self.clip_grad_norm = check.float_("clip_grad_norm", self.clip_grad_norm, 0.0, low_open=True,
                                           optional=True)


@dataclasses.dataclass
class ScheduleConfig(_Section):
    """The `schedule:` section: per-iteration learning-rate schedule.

    The lr is `lr * warmup(step) * decay(step)` (MMAction2 chains its
    schedulers the same way).

    Args:
        policy: `"multistep"` (x`gamma` at each epoch of `milestones`) or
            `"cosine"` (cosine annealing from `lr` to `lr * min_lr_ratio`
            over the whole run).
        milestones: epochs where the multistep lr is multiplied by `gamma`.
        gamma: multistep factor.
        min_lr_ratio: final lr of the cosine policy, relative to `lr`.
        warmup_epochs: linear warmup length in epochs (may be fractional;
            0 disables it).
        warmup_start_factor: lr factor at the first step of the warmup.
    """

    SECTION = "schedule"

    policy: str = "multistep"
    milestones: tuple = (25, 45)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    warmup_epochs: float = 5.0
    warmup_start_factor: float = 0.1

    def validate(self, check):
        check.choice("policy", self.policy, SCHEDULE_POLICIES)
        self.milestones = check.int_list("milestones", self.milestones, minimum=1, increasing=True)
        self.gamma = check.float_("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.min_lr_ratio = check.float_("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        self.warmup_epochs = check.float_("warmup_epochs", self.warmup_epochs, 0.0)
        self.warmup_start_factor = check.float_("warmup_start_factor", self.warmup_start_factor, 0.0, 1.0)


@dataclasses.dataclass
class TrainConfig(_Section):
    """The `train:` section: the training loop.

    Args:
        epochs: training epochs.
        batch_per_replica: clips per replica (GPU) and step; the global batch
            is this times the number of replicas.
        base_batch_size: the global batch `optimizer.lr` was tuned for
            (`--auto-scale-lr` scales lr by actual / base, as MMAction2).
        steps_per_epoch: null = one pass over the training list; an int caps
            the epoch (quick experiments, tests).
        precision: `"float32"`, `"mixed_float16"` (GPU, dynamic loss
            scaling) or `"mixed_bfloat16"`.
        seed: global seed of weights, dropout and input order (null = random).
        deterministic: enable TensorFlow op determinism (repeatable runs).
        val_interval: evaluate on `test.val_split` every this many epochs
            (0 = never during training).
    """

    SECTION = "train"

    epochs: int = 50
    batch_per_replica: int = 16
    base_batch_size: int = 128
    steps_per_epoch: Optional[int] = None
    precision: str = "float32"
    seed: Optional[int] = None
    deterministic: bool = False
    val_interval: int = 1

    def validate(self, check):
        check.int_("epochs", self.epochs, minimum=1)
        check.int_("batch_per_replica", self.batch_per_replica, minimum=1)
        check.int_("base_batch_size", self.base_batch_size, minimum=1)
        check.int_("steps_per_epoch", self.steps_per_epoch, minimum=1, optional=True)
        check.choice("precision", self.precision, PRECISIONS)
        check.int_("seed", self.seed, minimum=0, optional=True)
        check.bool_("deterministic", self.deterministic)
        check.int_("val_interval", self.val_interval, minimum=0)


@dataclasses.dataclass
class CheckpointConfig(_Section):
    """The `checkpoint:` section (resumable training state).

    Args:
        interval_epochs: save at the end of every this many epochs
            (0 = only at the end of training).
        interval_steps: also save every this many global steps (0 = off).
        keep_last: resumable checkpoints kept (older ones are deleted).
        save_best: keep the weights with the best validation top-1 as
            `best.weights.h5` (needs `train.val_interval > 0`).
    """

    SECTION = "checkpoint"

    interval_epochs: int = 1
    interval_steps: int = 0
    keep_last: int = 3
    save_best: bool = True

    def validate(self, check):
        check.int_("interval_epochs", self.interval_epochs, minimum=0)
        check.int_("interval_steps", self.interval_steps, minimum=0)
        check.int_("keep_last", self.keep_last, minimum=1)
        check.bool_("save_best", self.save_best)


@dataclasses.dataclass
class TestConfig(_Section):
    """The `test:` section: the evaluation protocol.

    The views (clips x crops) are the data section's (`twice_sample`,
    `dense_test_clips`, `test_crop`, `test_crop_size`).

    Args:
        average: average softmax probabilities over views (`"prob"`,
            MMAction2) or logits (`"logit"`, mit-han-lab).
        split: split evaluated at the end of training and by `tsm-test`.
        val_split: split evaluated during training (`train.val_interval`).
        val_protocol: views of the validation during training: `"center"`
            (1 clip x 1 center crop, MMAction2's val pipeline) or `"test"`
            (the full test views).
        views_per_batch: test views run through the network at once.
    """

    SECTION = "test"

    average: str = "prob"
    split: str = "test"
    val_split: str = "val"
    val_protocol: str = "center"
    views_per_batch: int = 16

    def validate(self, check):
        check.choice("average", self.average, TEST_AVERAGES)
        check.choice("split", self.split, SPLITS)
        check.choice("val_split", self.val_split, SPLITS)
        check.choice("val_protocol", self.val_protocol, VAL_PROTOCOLS)
        check.int_("views_per_batch", self.views_per_batch, minimum=1)


_SECTIONS = {
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "checkpoint": CheckpointConfig,
    "test": TestConfig,
}


@dataclasses.dataclass
class Config:
    """A validated training config (see the module docstring).

    Example:

    >>> config = Config.from_dict({"model": {"backbone": "mobilenet_v2",
    ...                                      "num_classes": 10},
    ...                            "data": {"source": "synthetic"}})
    >>> config.model.backbone, config.data.num_frames_per_clip
    ('mobilenet_v2', 8)
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    test: TestConfig = dataclasses.field(default_factory=TestConfig)

    @classmethod
    def from_dict(cls, values):
        """Validated `Config` from a plain mapping (the parsed YAML)."""
        if not isinstance(values, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {values!r}")
        known = ["data", *_SECTIONS]
        for key in values:
            if key not in known:
                raise ConfigError(f"{key}: unknown section (known sections: {', '.join(known)})")
        sections = {name: section.from_dict(values.get(name)) for name, section in _SECTIONS.items()}
        data_values = values.get("data") or {}
        if not isinstance(data_values, dict):
            raise ConfigError(f"data: expected a mapping of options, got {data_values!r}")
        try:
            data = DataConfig.from_dict(data_values, prefix="data")
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(str(error)) from None
        config = cls(data=data, **sections)
        config.validate()
        return config

    def validate(self):
        """Checks between sections (each section validated itself)."""
        if self.data.source == "synthetic" and self.model.num_classes != self.data.synthetic.num_classes:
            raise ConfigError(
                f"model.num_classes: expected {self.data.synthetic.num_classes} "
                f"(data.synthetic.num_classes), got {self.model.num_classes}"
            )
        late = [epoch for epoch in self.schedule.milestones if epoch >= self.train.epochs]
        if self.schedule.policy == "multistep" and late:
            raise ConfigError(
                f"schedule.milestones: expected epochs < train.epochs ({self.train.epochs}), got {late}"
            )
        if self.schedule.warmup_epochs > self.train.epochs:
            raise ConfigError(
                f"schedule.warmup_epochs: expected at most train.epochs ({self.train.epochs}), "
                f"got {self.schedule.warmup_epochs}"
            )
        if self.checkpoint.save_best and self.train.val_interval == 0:
            raise ConfigError(
                "checkpoint.save_best: expected false when train.val_interval is 0 "
                "(the best checkpoint is chosen by validation top-1), got True"
            )

    def to_dict(self):
        """Plain mapping that `from_dict` accepts (written to the work dir)."""
        values = {name: getattr(self, name).to_dict() for name in _SECTIONS}
        values["data"] = self.data.to_dict()
        return {name: values[name] for name in ["model", "data", *list(_SECTIONS)[1:]]}

    def validation_data(self):
        """The data config of the validation during training (`test.val_protocol`)."""
        if self.test.val_protocol == "test":
            return self.data
        return self.data.replace(test_crop="center", test_crop_size=None, twice_sample=False, dense_test_clips=1)

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_override(text):
    """`"section.key=value"` -> `(["section", "key"], value)`; the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw_value = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"override {text!r}: expected section.key=value (for example optimizer.lr=0.01)")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error})") from None
    return path, value


def apply_overrides(values, overrides):
    """Returns `values` with each `section.key=value` of `overrides` set."""
    values = _merge(values, {})
    for text in overrides or ():
        path, value = parse_override(text)
        target = values
        for depth, key in enumerate(path[:-1]):
            child = target.get(key)
            if child is None:
                child = target[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(path[:depth + 1])} is {child!r}, not a section"
                )
            target = child
        target[path[-1]] = value
    return values


def read_config_file(path, _seen=()):
    """The raw mapping of a YAML config, with its `base:` chain merged in."""
    path = os.path.abspath(os.fspath(path))
    if path in _seen:
        raise ConfigError(f"{path}: circular 'base' chain {' -> '.join(_seen + (path,))}")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a config file path, got {base!r}")
    base_path = os.path.join(os.path.dirname(path), base)
    return _merge(read_config_file(base_path, _seen + (path,)), values)


def load_config(path, overrides=()):
    """Reads, overrides and validates a YAML config.

    Args:
        path: YAML file.
        overrides: iterable of `"section.key=value"` strings (`--set`).

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: naming the file or the key, for any problem.
    """
    values = apply_overrides(read_config_file(path), overrides)
    try:
        return Config.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{os.fspath(path)}: {error}") from None


def _merge(base, update):
    """Deep merge of two mappings: nested mappings merge, other values replace."""
    merged = {key: _merge(value, {}) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = _merge(value, {}) if isinstance(value, dict) else value
    return merged
