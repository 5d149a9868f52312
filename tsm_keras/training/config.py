"""Declarative training configuration: YAML validated into dataclasses.

A training config is a YAML mapping with the sections `model`, `data`,
`optimizer`, `schedule`, `train`, `checkpoint` and `test` (every section and
every key is optional; the defaults are the MMAction2 TSM-R50 recipe). The
`model` section is a `tsm_keras.models.TSMSpec` plus training-only keys, the
`data` section is `tsm_keras.data.DataConfig`; every section is a
`tsm_keras.utils.config.ConfigSection`. A config may start from another with
`base: other.yaml` (a path relative to the file, or absolute): mappings are
merged key by key, every other value replaces the base's.

`load_config(path, overrides)` is the only entry point: it reads the file,
applies `--set section.key=value` overrides (values parsed as YAML) and
validates everything, so an unknown key, a wrong type or an impossible value
raises `ConfigError` naming the key (`optimizer.lr: expected a number > 0,
got -1`) before any work starts.
"""

import dataclasses
import os
from typing import Optional

import yaml

from tsm_keras.data import DataConfig
from tsm_keras.data.annotations import load_label_map
from tsm_keras.models.precision import PRECISION_SYNONYMS, PRECISIONS, canonical_precision
from tsm_keras.models.spec import TSMSpec
from tsm_keras.utils.config import (
    REFUSE,
    Check,
    ConfigError,
    ConfigSection,
    boolean,
    integer,
    ints,
    number,
    one_of,
    option,
    optional,
    section,
    text,
)

SCHEDULE_POLICIES = ("multistep", "cosine")
TEST_AVERAGES = ("prob", "logit")
SPLITS = ("train", "val", "test")
VAL_PROTOCOLS = ("center", "test")


def precision_name():
    """A precision of `tsm_keras.models.precision`, returned as its documented name (synonyms accepted)."""

    def convert(value):
        try:
            return canonical_precision(value) if isinstance(value, str) else REFUSE
        except ValueError:
            return REFUSE

    synonyms = ", ".join(f"{synonym!r} for {name!r}" for synonym, name in PRECISION_SYNONYMS.items())
    return Check(f"one of {list(PRECISIONS)} (or {synonyms})", convert)


@dataclasses.dataclass(frozen=True)
class ModelConfig(TSMSpec):
    """The `model:` section: a `TSMSpec` plus the training-only keys.

    `num_segments` and `input_shape` are not keys of the section (they are
    refused, and left out of `to_dict`): they are the data's
    `num_frames_per_clip` and `(crop_size, crop_size, 3)`, joined in by
    `tsm_spec(data)` (`Config.model_spec()`), so read them from there.

    Args:
        backbone, num_classes, shift_div, shift_place, direction, non_local,
        temporal_pool, layout, dropout, bn_momentum, init_std,
        backbone_options: see `tsm_keras.models.TSMSpec`.
        shift: false builds the TSN twin (no temporal shift, `shift_div` 0).
        weights: backbone initialisation (`"imagenet"` or a
            `keras.applications` weight file), or null for random.
        partial_bn: freeze the statistics and affine parameters of every
            backbone BatchNorm but the first (TSN / TSM "partial BN").
    """

    FROM_DATA = ("num_segments", "input_shape")
    __hash__ = TSMSpec.__hash__

    shift: bool = option(True, boolean())
    weights: Optional[str] = option(None, optional(text()))
    partial_bn: bool = option(False, boolean())

    @classmethod
    def field_names(cls):
        return [name for name in super().field_names() if name not in cls.FROM_DATA]

    def to_dict(self):
        values = super().to_dict()
        return {name: values[name] for name in self.field_names()}

    @property
    def shifts(self):
        return self.shift and self.shift_div > 0

    def tsm_spec(self, data, input_size=None):
        """The `TSMSpec` of this section for clips of `data` (frames `input_size` if given)."""
        size = int(input_size or data.crop_size)
        values = {name: getattr(self, name) for name in TSMSpec.field_names() if name not in self.FROM_DATA}
        values.update(num_segments=data.num_frames_per_clip, input_shape=(size, size, 3))
        if not self.shift:
            values["shift_div"] = 0
        return TSMSpec(**values)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(ConfigSection):
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

    lr: float = option(0.02, number(low=0, low_open=True))
    momentum: float = option(0.9, number(low=0, high=1, high_open=True))
    nesterov: bool = option(False, boolean())
    weight_decay: float = option(1e-4, number(low=0))
    classifier_weight_lr_mult: float = option(5.0, number(low=0))
    classifier_bias_lr_mult: float = option(10.0, number(low=0))
    bias_lr_mult: float = option(2.0, number(low=0))
    clip_grad_norm: Optional[float] = option(20.0, optional(number(low=0, low_open=True)))

    def validate(self):
        if self.nesterov and self.momentum == 0:
            self.fail("nesterov", "false when momentum is 0", self.nesterov)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(ConfigSection):
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

    policy: str = option("multistep", one_of(SCHEDULE_POLICIES))
    milestones: tuple = option((25, 45), ints(minimum=1, increasing=True))
    gamma: float = option(0.1, number(low=0, high=1, low_open=True))
    min_lr_ratio: float = option(0.0, number(low=0, high=1))
    warmup_epochs: float = option(5.0, number(low=0))
    warmup_start_factor: float = option(0.1, number(low=0, high=1))


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigSection):
    """The `train:` section: the training loop.

    Args:
        epochs: training epochs.
        batch_per_replica: clips per replica (GPU) and step; the global batch
            is this times the number of replicas.
        base_batch_size: the global batch `optimizer.lr` was tuned for
            (`--auto-scale-lr` scales lr by actual / base, as MMAction2).
        steps_per_epoch: null = one pass over the training list; an int caps
            the epoch (quick experiments, tests).
        precision: `"float32"`, `"bfloat16"` (Keras `mixed_bfloat16`:
            float32 variables, bfloat16 compute; `"mixed_bfloat16"` is read
            as `"bfloat16"`) or `"mixed_float16"` (GPU, dynamic loss
            scaling); see `tsm_keras.models.precision`.
        seed: global seed of weights, dropout and input order (null = random).
        deterministic: enable TensorFlow op determinism (repeatable runs).
        val_interval: evaluate on `test.val_split` every this many epochs
            (0 = never during training).
    """

    SECTION = "train"

    epochs: int = option(50, integer(minimum=1))
    batch_per_replica: int = option(16, integer(minimum=1))
    base_batch_size: int = option(128, integer(minimum=1))
    steps_per_epoch: Optional[int] = option(None, optional(integer(minimum=1)))
    precision: str = option("float32", precision_name())
    seed: Optional[int] = option(None, optional(integer(minimum=0)))
    deterministic: bool = option(False, boolean())
    val_interval: int = option(1, integer(minimum=0))


@dataclasses.dataclass(frozen=True)
class CheckpointConfig(ConfigSection):
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

    interval_epochs: int = option(1, integer(minimum=0))
    interval_steps: int = option(0, integer(minimum=0))
    keep_last: int = option(3, integer(minimum=1))
    save_best: bool = option(True, boolean())


@dataclasses.dataclass(frozen=True)
class TestConfig(ConfigSection):
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

    average: str = option("prob", one_of(TEST_AVERAGES))
    split: str = option("test", one_of(SPLITS))
    val_split: str = option("val", one_of(SPLITS))
    val_protocol: str = option("center", one_of(VAL_PROTOCOLS))
    views_per_batch: int = option(16, integer(minimum=1))


@dataclasses.dataclass(frozen=True)
class Config(ConfigSection):
    """A validated training config (see the module docstring).

    Example:

    >>> config = Config.from_dict({"model": {"backbone": "mobilenet_v2",
    ...                                      "num_classes": 10},
    ...                            "data": {"source": "synthetic"}})
    >>> config.model.backbone, config.data.num_frames_per_clip
    ('mobilenet_v2', 8)
    """

    OPTION_NOUN = "section"

    model: ModelConfig = option(check=section(ModelConfig), default_factory=ModelConfig)
    data: DataConfig = option(check=section(DataConfig), default_factory=DataConfig)
    optimizer: OptimizerConfig = option(check=section(OptimizerConfig), default_factory=OptimizerConfig)
    schedule: ScheduleConfig = option(check=section(ScheduleConfig), default_factory=ScheduleConfig)
    train: TrainConfig = option(check=section(TrainConfig), default_factory=TrainConfig)
    checkpoint: CheckpointConfig = option(check=section(CheckpointConfig), default_factory=CheckpointConfig)
    test: TestConfig = option(check=section(TestConfig), default_factory=TestConfig)

    @classmethod
    def from_dict(cls, values, path=None):
        """Validated `Config` from a plain mapping (the parsed YAML)."""
        if not isinstance(values, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {values!r}")
        return super().from_dict(values, path)

    def validate(self):
        """Checks between sections (each section validated itself)."""
        self._check_classes()
        late = [epoch for epoch in self.schedule.milestones if epoch >= self.train.epochs]
        if self.schedule.policy == "multistep" and late:
            raise ConfigError(f"expected epochs < train.epochs ({self.train.epochs}), got {late}",
                              path="schedule.milestones")
        if self.schedule.warmup_epochs > self.train.epochs:
            raise ConfigError(f"expected at most train.epochs ({self.train.epochs}), "
                              f"got {self.schedule.warmup_epochs}", path="schedule.warmup_epochs")
        if self.checkpoint.save_best and self.train.val_interval == 0:
            raise ConfigError("expected false when train.val_interval is 0 (the best checkpoint is chosen by "
                              "validation top-1), got True", path="checkpoint.save_best")

    def _check_classes(self):
        """`model.num_classes` must be the number of classes the data has."""
        data, num_classes = self.data, self.model.num_classes
        if data.source == "synthetic":
            if num_classes != data.synthetic.num_classes:
                raise ConfigError(f"expected {data.synthetic.num_classes} (data.synthetic.num_classes), "
                                  f"got {num_classes}", path="model.num_classes")
            return
        if data.label_map is None:
            return  # labels are whatever the lists hold
        try:
            names = load_label_map(data.label_map)
        except (OSError, ValueError) as error:
            raise ConfigError(str(error), path="data.label_map") from None
        if len(names) != num_classes:
            raise ConfigError(f"expected {len(names)} (the classes of data.label_map {data.label_map!r}), "
                              f"got {num_classes}", path="model.num_classes")

    def to_dict(self):
        """Plain mapping that `from_dict` accepts (written to the work dir).

        The `data.synthetic` options are left out unless the data is synthetic
        (a base config's block would only mislead the reader).
        """
        values = super().to_dict()
        if self.data.source != "synthetic":
            del values["data"]["synthetic"]
        return values

    def model_spec(self, input_size=None):
        """The `TSMSpec` of the model section for this data (frames `input_size` if given)."""
        return self.model.tsm_spec(self.data, input_size)

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
