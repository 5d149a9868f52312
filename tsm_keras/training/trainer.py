"""The training loop: one `tf.function` step on `strategy.run` for every strategy.

`Trainer(config, work_dir).fit()` trains the config's TSM on one device, on
the local replicas of a `MirroredStrategy` or on several workers of a
`MultiWorkerMirroredStrategy` with the same code:

- input: global replica `i` (worker `w`, local replica `r`, `i = w * L + r`)
  reads shard `i` of the training list (`build_train_dataset(...,
  num_shards=num_replicas, shard_index=i)`), so the clips a replica sees do
  not depend on how replicas are spread over workers, and no video is
  decoded twice;
- step: forward, mean cross-entropy over the global batch, gradients summed
  over replicas, then `GroupedSGD` clips them by global norm and applies the
  TSM parameter groups (`tsm_keras.training.optimizer`);
- BatchNorm statistics are per replica during an epoch (like PyTorch DDP)
  and averaged over replicas at every epoch end and before every checkpoint
  (MMAction2's `SyncBuffersHook`); weights and optimizer slots are copied
  from replica 0 at the same moments (see `_make_sync_replicas`);
- epoch `e` reads its own seeded pass over the data (`seed(e)`), so resuming
  at step `k` of epoch `e` rebuilds that pass and skips `k` batches.
"""

import dataclasses
import json
import math
import os
import secrets

import keras
import numpy as np
import tensorflow as tf

from tsm_keras.data import build_test_dataset, build_train_dataset, num_train_videos
from tsm_keras.models.precision import precision_scope
from tsm_keras.training import checkpoint as checkpoint_lib
from tsm_keras.training import distribute, evaluation, reporting
from tsm_keras.training.builders import (  # noqa: F401 (freeze_partial_bn: re-exported)
    BEST_INFO,
    BEST_MODEL,
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CURVES_FILE,
    FINAL_MODEL,
    FINAL_WEIGHTS,
    LOG_FILE,
    TENSORBOARD_DIR,
    TEST_DIR,
    build_model,
    freeze_partial_bn,
)
from tsm_keras.training.config import ConfigError
from tsm_keras.training.optimizer import GroupedSGD, all_reduce_gradients, reference_param_groups
from tsm_keras.training.schedule import build_schedule


def epoch_seed(seed, epoch):
    """Input seed of one epoch (a pure function of the run seed and the epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0] % 2**62)


def build_optimizer(config, model, learning_rate):
    """`GroupedSGD` of the config for `model` (wrapped for loss scaling under
    `mixed_float16`), built on the model's trainable variables.

    Create it in the scope of the strategy that holds the model.
    """
    optimizer = GroupedSGD(
        learning_rate=learning_rate,
        momentum=config.optimizer.momentum,
        nesterov=config.optimizer.nesterov,
        weight_decay=config.optimizer.weight_decay,
        param_groups=reference_param_groups(
            model,
            config.optimizer.classifier_weight_lr_mult,
            config.optimizer.classifier_bias_lr_mult,
            config.optimizer.bias_lr_mult,
        ),
        global_clipnorm=config.optimizer.clip_grad_norm,
    )
    if config.train.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def make_train_step(model, optimizer, strategy, global_batch):
    """The `tf.function` training step: `step(iterator) -> (loss, correct, grad_norm)`.

    Takes one batch per replica from a distributed `iterator`, computes the
    cross-entropy averaged over the global batch, sums gradients over
    replicas, applies them, and returns the global mean loss, the number of
    correct clips over all replicas and the (unclipped) global gradient norm.
    """
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(clips, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(clips, training=True), tf.float32)
            per_clip = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_clip, global_batch_size=global_batch)
            objective = optimizer.scale_loss(loss) if scaled else loss
        gradients = all_reduce_gradients(tape.gradient(objective, model.trainable_variables))
        norm = tf.linalg.global_norm(gradients)
        if scaled:
            norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
        optimizer.apply(gradients, model.trainable_variables)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32))
        return loss, correct, norm

    @tf.function
    def train_step(iterator):
        clips, labels = next(iterator)
        loss, correct, norm = strategy.run(replica_step, args=(clips, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None),
        )

    return train_step


@dataclasses.dataclass
class FitResult:
    """What `Trainer.fit` leaves: the work dir and the closing numbers."""

    work_dir: str
    epochs: int
    global_step: int
    final_weights: str
    final_model: str = None
    best_weights: str = None
    best_model: str = None
    best_val_top1: float = None
    test_metrics: dict = None
    history: list = None


class Trainer:
    """Trains a TSM from a validated `Config` into a work dir.

    Args:
        config: `tsm_keras.training.Config`.
        work_dir: output directory (see the README's "work dir" section).
        strategy: `"default"`, `"mirrored"` or `"multi_worker"`, or a
            `tf.distribute.Strategy`.
        auto_scale_lr: scale `optimizer.lr` by the global batch over
            `train.base_batch_size`.
        verbose: 1 progress bars, 2 one line per epoch (both with the run summary,
            validation lines and test result; chief only), 0 silent.
        test_at_end: evaluate `test.split` with the final weights.

    Example:

    >>> config = load_config("configs/quickstart.yaml")
    >>> result = Trainer(config, "work_dirs/quickstart").fit()
    >>> result.test_metrics["top1"]
    """

    def __init__(self, config, work_dir, strategy="default", auto_scale_lr=False, verbose=1, test_at_end=True):
        self.config = config
        self.work_dir = os.fspath(work_dir)
        self.strategy = distribute.make_strategy(strategy) if isinstance(strategy, str) else strategy
        self.auto_scale_lr = auto_scale_lr
        self.test_at_end = test_at_end
        self.worker_index, self.num_workers = distribute.worker_info(self.strategy)
        self.is_chief = self.worker_index == 0
        self.verbose = verbose if self.is_chief else 0
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.global_batch = config.train.batch_per_replica * self.num_replicas
        videos = num_train_videos(config.data, self.num_replicas, self.num_replicas - 1)
        self.steps_per_epoch = videos // config.train.batch_per_replica
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_per_replica: expected at most {videos} (training videos per replica "
                f"with {self.num_replicas} replicas), got {config.train.batch_per_replica}"
            )
        if config.train.steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.train.steps_per_epoch)
        self.lr = config.optimizer.lr
        if auto_scale_lr:
            self.lr *= self.global_batch / config.train.base_batch_size
        self._eval_models = {}

    # ----------------------------------------------------------------- setup
    def _build(self):
        config = self.config
        with self.strategy.scope():
            self.model = build_model(config)
            self.schedule = build_schedule(config, self.lr, self.steps_per_epoch)
            self.optimizer = build_optimizer(config, self.model, self.schedule)
        self.checkpoints = checkpoint_lib.CheckpointManager(
            os.path.join(self.work_dir, CHECKPOINT_DIR),
            self.model,
            self.optimizer,
            keep_last=config.checkpoint.keep_last,
            is_chief=self.is_chief,
        )
        self._train_step = make_train_step(self.model, self.optimizer, self.strategy, self.global_batch)
        self._sync_replicas = self._make_sync_replicas()

    def _make_sync_replicas(self):
        """Makes every replica hold the same state (no-op on one replica).

        BatchNorm statistics are averaged (each replica tracked its own
        batches, like MMAction2's `SyncBuffersHook`). Weights and optimizer
        slots are copied from replica 0: the replicas apply identical
        gradients, but TensorFlow's CPU kernels may round an element-wise
        `a * b + c` differently depending on memory alignment (vectorised
        FMA body vs scalar tail), so copies can drift apart by an ulp per
        step; this bounds that drift to one epoch.
        """
        if self.num_replicas == 1:
            return lambda: None
        statistics, copied = [], []
        for variable in self.model.non_trainable_variables:
            if "float" in str(variable.dtype):
                is_statistic = variable.path.rpartition("/")[2].startswith("moving_")
                (statistics if is_statistic else copied).append(variable)
        copied += list(self.model.trainable_variables)
        copied += [variable for variable in self.optimizer.variables if "float" in str(variable.dtype)]
        strategy = self.strategy

        def replica_sync():
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            means = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(variable.value) for variable in statistics]
            )
            firsts = context.all_reduce(
                tf.distribute.ReduceOp.SUM,
                [tf.where(first, variable.value, tf.zeros_like(variable.value)) for variable in copied],
            )
            for variable, value in zip(statistics + copied, list(means) + list(firsts)):
                variable.assign(value)

        @tf.function
        def sync():
            strategy.run(replica_sync)

        return sync

    def _train_dataset(self, seed, epoch, start_step):
        """Distributed batches of epoch `epoch`, from step `start_step` on."""
        config = self.config
        steps = self.steps_per_epoch - start_step
        num_replicas = self.num_replicas

        def dataset_fn(context):
            local = context.num_replicas_in_sync // context.num_input_pipelines
            first = context.input_pipeline_id * local
            shards = [
                build_train_dataset(
                    config.data,
                    config.train.batch_per_replica,
                    seed=epoch_seed(seed, epoch),
                    num_shards=num_replicas,
                    shard_index=first + replica,
                ).repeat()
                for replica in range(local)
            ]
            if local == 1:
                dataset = shards[0]
            else:
                # Consecutive batches go to consecutive local replicas.
                dataset = tf.data.Dataset.zip(tuple(shards)).flat_map(
                    lambda *batches: _concatenate([tf.data.Dataset.from_tensors(batch) for batch in batches])
                )
            return dataset.skip(start_step * local).take(steps * local).prefetch(tf.data.AUTOTUNE)

        options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
        return self.strategy.distribute_datasets_from_function(dataset_fn, options)

    # ------------------------------------------------------------------ loop
    def fit(self, resume=None):
        """Trains (optionally resuming) and returns a `FitResult`.

        Args:
            resume: None (fresh run; refuses a work dir that already has
                checkpoints), `"latest"` (the newest checkpoint of the work
                dir, or a fresh start if there is none) or a checkpoint path.
        """
        config = self.config
        checkpoint_dir = os.path.join(self.work_dir, CHECKPOINT_DIR)
        if resume is None and checkpoint_lib.latest_checkpoint(checkpoint_dir):
            raise FileExistsError(
                f"{checkpoint_dir} already has checkpoints: resume='latest' continues that run, "
                f"or choose another work_dir"
            )
        if resume == "latest":
            resume = checkpoint_lib.latest_checkpoint(checkpoint_dir)
        with precision_scope(config.train.precision):
            return self._fit(resume)

    def _fit(self, resume):
        config = self.config
        seed = config.train.seed
        if resume is not None:
            seed = checkpoint_lib.read_state(resume)["seed"]
        elif seed is None:
            seed = secrets.randbelow(2**31)
        keras.utils.set_random_seed(seed)
        if config.train.deterministic:
            tf.config.experimental.enable_op_determinism()
        if self.is_chief:
            os.makedirs(self.work_dir, exist_ok=True)
            _write_text(os.path.join(self.work_dir, CONFIG_FILE), config.to_yaml())
        self._build()

        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "seed": seed, "best_top1": None,
                 "best_epoch": None, "epoch_loss_sum": 0.0, "epoch_correct": 0.0}
        if resume is not None:
            state.update(self.checkpoints.restore(resume))
            state["seed"] = seed
            self._log(f"Resumed from {resume}: epoch {state['epoch']}, step {state['step_in_epoch']}, "
                      f"global step {state['global_step']}")
        self._print_summary(seed)

        log = tensorboard = None
        if self.is_chief:
            log = reporting.CSVLog(os.path.join(self.work_dir, LOG_FILE),
                                   resume_epoch=state["epoch"] if resume is not None else None)
            tensorboard = reporting.TensorBoard(os.path.join(self.work_dir, TENSORBOARD_DIR))
        checkpoint_every = config.checkpoint.interval_steps
        for epoch in range(state["epoch"], config.train.epochs):
            start_step = state["step_in_epoch"] if epoch == state["epoch"] else 0
            if start_step == 0:
                state["epoch_loss_sum"], state["epoch_correct"] = 0.0, 0.0
            iterator = iter(self._train_dataset(seed, epoch, start_step))
            progress = reporting.EpochProgress(epoch, config.train.epochs, self.steps_per_epoch, start_step,
                                               self.global_batch, self.verbose)
            for step in range(start_step, self.steps_per_epoch):
                loss, correct, norm = (float(value) for value in self._train_step(iterator))
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at epoch {epoch + 1}, step {step + 1}")
                state["global_step"] += 1
                state["epoch_loss_sum"] += loss
                state["epoch_correct"] += correct
                lr = float(self.schedule(state["global_step"] - 1))
                done = step + 1
                progress.update(done, state["epoch_loss_sum"] / done,
                                state["epoch_correct"] / (done * self.global_batch), lr)
                if tensorboard is not None:
                    tensorboard.scalars(state["global_step"], {
                        "train/loss": loss, "train/top1": correct / self.global_batch, "train/lr": lr,
                        "train/grad_norm": norm, "train/clips_per_s": progress.clips_per_s})
                mid_epoch = done < self.steps_per_epoch
                if checkpoint_every and state["global_step"] % checkpoint_every == 0 and mid_epoch:
                    state.update(epoch=epoch, step_in_epoch=done)
                    self._save_checkpoint(state)

            self._sync_replicas()
            state.update(epoch=epoch + 1, step_in_epoch=0)
            steps_done = self.steps_per_epoch
            row = {
                "epoch": epoch + 1,
                "global_step": state["global_step"],
                "loss": state["epoch_loss_sum"] / steps_done,
                "top1": state["epoch_correct"] / (steps_done * self.global_batch),
                "lr": lr,
                "clips_per_s": progress.clips_per_s,
                "epoch_time_s": progress.elapsed,
            }
            last = epoch + 1 == config.train.epochs
            if config.train.val_interval and ((epoch + 1) % config.train.val_interval == 0 or last):
                row.update(self._validate(state, epoch))
            interval = config.checkpoint.interval_epochs
            if last or (interval and (epoch + 1) % interval == 0):
                self._save_checkpoint(state)
            if self.is_chief:
                log.append(row)
                tensorboard.scalars(state["global_step"], {
                    f"epoch/{key}": value for key, value in row.items() if key not in ("epoch", "global_step")})
        return self._finish(state, tensorboard)

    def _save_checkpoint(self, state):
        self._sync_replicas()
        saved = {key: value for key, value in state.items() if key != "variables"}
        self.checkpoints.save(state["global_step"], saved)

    def _evaluation_model(self, view_size):
        """A one-device twin of the model for `view_size` frames, with current weights."""
        if view_size not in self._eval_models:
            self._eval_models[view_size] = build_model(self.config, input_size=view_size)
        model = self._eval_models[view_size]
        model.set_weights(self.model.get_weights())
        return model

    def _validate(self, state, epoch):
        """Validation on the chief; tracks and saves the best weights."""
        if not self.is_chief:
            return {}
        config = self.config
        data = config.validation_data()
        model = self._evaluation_model(data.view_crop_size)
        result = evaluation.evaluate(
            model,
            build_test_dataset(data, config.test.val_split),
            average=config.test.average,
            videos_per_batch=max(1, config.test.views_per_batch // data.num_test_views),
        )
        metrics = result.metrics()
        self._log(f"  {config.test.val_split}: top1 {metrics['top1']:.4f}  top5 {metrics['top5']:.4f}  "
                  f"mean class acc {metrics['mean_class_accuracy']:.4f}  ({metrics['num_videos']} videos)")
        if config.checkpoint.save_best and (state["best_top1"] is None or metrics["top1"] > state["best_top1"]):
            state["best_top1"], state["best_epoch"] = metrics["top1"], epoch + 1
            _save_weights_atomic(model, os.path.join(self.work_dir, BEST_WEIGHTS))
            _save_model_atomic(model, os.path.join(self.work_dir, BEST_MODEL))
            _write_text(os.path.join(self.work_dir, BEST_INFO),
                        json.dumps({"epoch": epoch + 1, "global_step": state["global_step"],
                                    f"{config.test.val_split}_top1": metrics["top1"]}, indent=1))
        return {"val_top1": metrics["top1"], "val_top5": metrics["top5"],
                "val_mean_class_accuracy": metrics["mean_class_accuracy"]}

    def _finish(self, state, tensorboard):
        result = FitResult(
            work_dir=self.work_dir,
            epochs=state["epoch"],
            global_step=state["global_step"],
            final_weights=os.path.join(self.work_dir, FINAL_WEIGHTS),
            final_model=os.path.join(self.work_dir, FINAL_MODEL),
            best_weights=os.path.join(self.work_dir, BEST_WEIGHTS) if state["best_top1"] is not None else None,
            best_model=os.path.join(self.work_dir, BEST_MODEL) if state["best_top1"] is not None else None,
            best_val_top1=state["best_top1"],
        )
        if not self.is_chief:
            return result
        tensorboard.close()
        _save_weights_atomic(self.model, result.final_weights)
        # The one-device twin at the test view size: the model the end-of-training test evaluates
        # (the training model may live on several replicas).
        _save_model_atomic(self._evaluation_model(self.config.data.view_crop_size), result.final_model)
        log_path = os.path.join(self.work_dir, LOG_FILE)
        reporting.plot_curves(log_path, os.path.join(self.work_dir, CURVES_FILE),
                              title=os.path.basename(os.path.normpath(self.work_dir)))
        result.history = reporting.CSVLog.read(log_path)
        if self.test_at_end:
            from tsm_keras.training.testing import run_test

            result.test_metrics = run_test(
                self.config, self._evaluation_model(self.config.data.view_crop_size),
                os.path.join(self.work_dir, TEST_DIR),
                verbose=self.verbose,
            )
        self._log(f"Work dir: {self.work_dir}")
        return result

    # --------------------------------------------------------------- display
    def _log(self, text):
        if self.verbose:
            print(text, flush=True)

    def _print_summary(self, seed):
        config = self.config
        scaled = (f" (auto-scaled: {config.optimizer.lr:g} x {self.global_batch} / "
                  f"{config.train.base_batch_size})")
        self._log(
            f"TSM {config.model.backbone}{'' if config.model.shift else ' (TSN: no shift)'}: "
            f"{self.model.count_params():,} parameters, {config.model.num_classes} classes, "
            f"{config.data.num_frames_per_clip} x {config.data.crop_size}x{config.data.crop_size} clips\n"
            f"{self.num_replicas} replica(s) on {self.num_workers} worker(s), global batch {self.global_batch}, "
            f"{self.steps_per_epoch} steps/epoch x {config.train.epochs} epochs, "
            f"lr {self.lr:g}{scaled if self.auto_scale_lr else ''}, seed {seed}, "
            f"precision {config.train.precision}{', deterministic' if config.train.deterministic else ''}"
        )


def _concatenate(datasets):
    combined = datasets[0]
    for dataset in datasets[1:]:
        combined = combined.concatenate(dataset)
    return combined


def _write_text(path, text):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _save_weights_atomic(model, path):
    temporary = f"{path[: -len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5"
    model.save_weights(temporary)
    os.replace(temporary, path)
    return path


def _save_model_atomic(model, path):
    """`model.save(path)` through a temporary `.keras` file renamed into place."""
    temporary = f"{path[: -len('.keras')]}.tmp-{os.getpid()}.keras"
    model.save(temporary)
    os.replace(temporary, path)
    return path
