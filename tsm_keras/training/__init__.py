"""Training and evaluation of TSM models: configs, the trainer, the test protocol.

Public API:

- `load_config(path, overrides)` -> `Config` (YAML validated into dataclasses;
  `ConfigError` names the bad key).
- `Trainer(config, work_dir, strategy, auto_scale_lr).fit(resume)` -> `FitResult`.
- `GroupedSGD`, `reference_param_groups`: SGD with the TSM parameter groups.
- `WarmupSchedule`: linear warmup + multistep / cosine, per iteration.
- `CheckpointManager`: atomic resumable checkpoints.
- `evaluate`, `run_test`, `load_test_model`: the multi-view test protocol.
"""

from tsm_keras.training.checkpoint import CheckpointManager, latest_checkpoint
from tsm_keras.training.config import (
    CheckpointConfig,
    Config,
    ConfigError,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    TestConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from tsm_keras.training.distribute import make_strategy, split_cpu
from tsm_keras.training.evaluation import EvaluationResult, evaluate, pair_accuracy, write_dump
from tsm_keras.training.optimizer import GroupedSGD, ParamGroup, reference_param_groups
from tsm_keras.training.schedule import WarmupSchedule, build_schedule
from tsm_keras.training.testing import load_test_model, run_test
from tsm_keras.training.builders import build_model, freeze_partial_bn
from tsm_keras.training.trainer import FitResult, Trainer
