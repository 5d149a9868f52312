"""Per-iteration learning-rate schedules of the TSM recipes."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tsm_keras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup chained with a multi-step or a cosine decay, per iteration.

    `lr(step) = base_lr * warmup(step) * decay(step)`, the way MMAction2
    chains `LinearLR` (by epoch, converted to iterations) with `MultiStepLR`
    or `CosineAnnealingLR`:

    - `warmup(step) = start + (1 - start) * min(step, W) / W` with
      `W = warmup_epochs * steps_per_epoch` (1 when there is no warmup);
    - multistep: `gamma ** (number of milestones <= step // steps_per_epoch)`;
    - cosine: `r + (1 - r) * (1 + cos(pi * step / total_steps)) / 2` with
      `r = min_lr_ratio`.

    Args:
        base_lr: float, learning rate after warmup and before any decay.
        steps_per_epoch: int, optimizer steps per epoch.
        epochs: int, length of the run (the cosine period).
        policy: `"multistep"` or `"cosine"`.
        milestones: epochs of the multistep decay.
        gamma: multistep factor.
        min_lr_ratio: final cosine lr relative to `base_lr`.
        warmup_epochs: float, warmup length in epochs (0 = none).
        warmup_start_factor: float, lr factor at step 0 of the warmup.

    Example:

    >>> schedule = WarmupSchedule(0.1, steps_per_epoch=10, epochs=50,
    ...                           milestones=(25, 45), warmup_epochs=5)
    >>> float(schedule(0)), float(schedule(50)), float(schedule(250))
    (0.01, 0.1, 0.01)
    """

    def __init__(
        self,
        base_lr,
        steps_per_epoch,
        epochs,
        policy="multistep",
        milestones=(),
        gamma=0.1,
        min_lr_ratio=0.0,
        warmup_epochs=0.0,
        warmup_start_factor=0.1,
    ):
        if policy not in ("multistep", "cosine"):
            raise ValueError(f"policy must be 'multistep' or 'cosine', got {policy!r}")
        if int(steps_per_epoch) < 1 or int(epochs) < 1:
            raise ValueError(f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch}, {epochs}")
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.policy = policy
        self.milestones = tuple(int(epoch) for epoch in milestones)
        self.gamma = float(gamma)
        self.min_lr_ratio = float(min_lr_ratio)
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_start_factor = float(warmup_start_factor)

    @property
    def warmup_steps(self):
        return int(round(self.warmup_epochs * self.steps_per_epoch))

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def __call__(self, step):
        step = ops.cast(step, "float32")
        factor = ops.ones((), "float32")
        if self.warmup_steps > 0:
            progress = ops.minimum(step, float(self.warmup_steps)) / float(self.warmup_steps)
            factor = self.warmup_start_factor + (1.0 - self.warmup_start_factor) * progress
        if self.policy == "multistep":
            epoch = ops.floor(step / float(self.steps_per_epoch))
            passed = sum(ops.cast(epoch >= milestone, "float32") for milestone in self.milestones)
            decay = ops.power(self.gamma, passed) if self.milestones else 1.0
        else:
            progress = ops.minimum(step, float(self.total_steps)) / float(self.total_steps)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            decay = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine
        return self.base_lr * factor * decay

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "policy": self.policy,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "min_lr_ratio": self.min_lr_ratio,
            "warmup_epochs": self.warmup_epochs,
            "warmup_start_factor": self.warmup_start_factor,
        }


def build_schedule(config, base_lr, steps_per_epoch):
    """`WarmupSchedule` of a `Config` for a given (possibly scaled) lr."""
    schedule = config.schedule
    return WarmupSchedule(
        base_lr=base_lr,
        steps_per_epoch=steps_per_epoch,
        epochs=config.train.epochs,
        policy=schedule.policy,
        milestones=schedule.milestones,
        gamma=schedule.gamma,
        min_lr_ratio=schedule.min_lr_ratio,
        warmup_epochs=schedule.warmup_epochs,
        warmup_start_factor=schedule.warmup_start_factor,
    )
