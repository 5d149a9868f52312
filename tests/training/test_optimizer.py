"""GroupedSGD (TSM parameter groups) and WarmupSchedule against independent references."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.models.precision import precision_scope
from tsm_keras.training.config import Config
from tsm_keras.training.optimizer import GroupedSGD, ParamGroup, reference_param_groups
from tsm_keras.training.schedule import WarmupSchedule, build_schedule
from tsm_keras.training.trainer import build_model, freeze_partial_bn


def small_model():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(3, name="fc_cls")(hidden)
    return keras.Model(inputs, outputs)


def test_reference_param_groups():
    groups = reference_param_groups(small_model())
    assert groups == {
        "hidden/kernel": ParamGroup(1.0, True),
        "hidden/bias": ParamGroup(2.0, False),
        "bn/gamma": ParamGroup(1.0, False),
        "bn/beta": ParamGroup(1.0, False),
        "fc_cls/kernel": ParamGroup(5.0, True),
        "fc_cls/bias": ParamGroup(10.0, False),
    }


def test_param_groups_of_a_tsm():
    config = Config.from_dict({"model": {"backbone": "mobilenet_v2", "num_classes": 4},
                               "data": {"synthetic": {"num_classes": 4}, "resize_short": None,
                                        "crop_size": 32, "num_clips": 2},
                               "schedule": {"milestones": [], "warmup_epochs": 0}, "train": {"epochs": 1}})
    model = build_model(config)
    groups = reference_param_groups(model)
    kinds = {path.rpartition("/")[2] for path in groups}
    assert kinds == {"kernel", "gamma", "beta", "bias"}
    assert all(group == ParamGroup(1.0, False) for path, group in groups.items()
               if path.endswith(("gamma", "beta")))
    assert groups["fc_cls/kernel"] == ParamGroup(5.0, True) and groups["fc_cls/bias"] == ParamGroup(10.0, False)
    assert groups["block1_expand_conv/kernel"] == ParamGroup(1.0, True)
    frozen = freeze_partial_bn(model)
    assert "stem_bn" not in frozen and "last_bn" in frozen
    trainable_norms = {v.path for v in model.trainable_variables if v.path.endswith(("gamma", "beta"))}
    assert trainable_norms == {"stem_bn/gamma", "stem_bn/beta"}


def numpy_sgd(weights, gradients_per_step, lrs, groups, momentum, weight_decay, clip=None):
    """PyTorch's SGD step written out in numpy (dampening 0, coupled L2)."""
    weights = {name: value.astype(np.float64) for name, value in weights.items()}
    buffers = {name: np.zeros_like(value) for name, value in weights.items()}
    for gradients, lr in zip(gradients_per_step, lrs):
        if clip:
            norm = math.sqrt(sum(np.sum(gradient.astype(np.float64) ** 2) for gradient in gradients.values()))
            gradients = {name: gradient * min(1.0, clip / norm) for name, gradient in gradients.items()}
        for name, gradient in gradients.items():
            group = groups[name]
            step = gradient + (weight_decay * weights[name] if group.decay else 0.0)
            buffers[name] = momentum * buffers[name] + step
            weights[name] = weights[name] - lr * group.lr_mult * buffers[name]
    return weights


@pytest.mark.parametrize("clip", [None, 0.5])
def test_grouped_sgd_matches_the_numpy_reference(clip):
    model = small_model()
    groups = reference_param_groups(model)
    schedule = WarmupSchedule(0.1, steps_per_epoch=2, epochs=3, milestones=(1,), warmup_epochs=0.5,
                              warmup_start_factor=0.5)
    optimizer = GroupedSGD(schedule, momentum=0.9, weight_decay=0.01, param_groups=groups, global_clipnorm=clip)
    variables = model.trainable_variables
    initial = {variable.path: variable.numpy() for variable in variables}
    rng = np.random.default_rng(0)
    steps = [{variable.path: rng.normal(size=variable.shape).astype("float32") for variable in variables}
             for _ in range(5)]
    for gradients in steps:
        optimizer.apply([tf.constant(gradients[variable.path]) for variable in variables], variables)
    lrs = [0.05, 0.1, 0.01, 0.01, 0.01]  # warmup 1 step from 0.5x, then x0.1 at epoch 1 (step 2)
    expected = numpy_sgd(initial, steps, lrs, groups, 0.9, 0.01, clip)
    for variable in variables:
        np.testing.assert_allclose(variable.numpy(), expected[variable.path], rtol=2e-5, atol=1e-6)


def test_grouped_sgd_matches_torch_sgd_with_param_groups():
    torch = pytest.importorskip("torch")
    model = small_model()
    groups = reference_param_groups(model)
    optimizer = GroupedSGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01, param_groups=groups)
    parameters = {v.path: torch.tensor(np.array(v.numpy()), requires_grad=True) for v in model.trainable_variables}
    reference = torch.optim.SGD(
        [{"params": [parameters[path]], "lr": 0.1 * group.lr_mult, "weight_decay": 0.01 if group.decay else 0.0}
         for path, group in groups.items()],
        lr=0.1, momentum=0.9, nesterov=True,
    )
    rng = np.random.default_rng(1)
    for _ in range(4):
        gradients = {v.path: rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables}
        optimizer.apply([tf.constant(gradients[v.path]) for v in model.trainable_variables],
                        model.trainable_variables)
        for path, parameter in parameters.items():
            parameter.grad = torch.tensor(gradients[path])
        reference.step()
    for variable in model.trainable_variables:
        np.testing.assert_allclose(variable.numpy(), parameters[variable.path].detach().numpy(), atol=1e-6)


def test_optimizer_round_trips_through_its_config():
    optimizer = GroupedSGD(WarmupSchedule(0.1, 10, 5, milestones=(2,)), momentum=0.8, weight_decay=1e-4,
                           param_groups={"fc_cls/bias": ParamGroup(10.0, False)}, global_clipnorm=20.0)
    again = GroupedSGD.from_config(optimizer.get_config())
    assert again.param_groups == optimizer.param_groups and again.l2_weight_decay == 1e-4
    assert again.global_clipnorm == 20.0 and float(again.learning_rate) == pytest.approx(0.1)


def test_multistep_schedule_by_hand():
    # MMAction2 K400: 0.02, warmup 5 epochs from 0.1x (per iteration), x0.1 at epochs 25 and 45.
    schedule = WarmupSchedule(0.02, steps_per_epoch=100, epochs=50, milestones=(25, 45), warmup_epochs=5,
                              warmup_start_factor=0.1)
    expected = {0: 0.002, 250: 0.002 + 0.018 * 0.5, 500: 0.02, 2499: 0.02, 2500: 0.002, 4499: 0.002,
                4500: 0.0002, 4999: 0.0002}
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5), step


def test_cosine_schedule_by_hand():
    schedule = WarmupSchedule(0.1, steps_per_epoch=10, epochs=10, policy="cosine", min_lr_ratio=0.1)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(50)) == pytest.approx(0.01 + 0.09 * 0.5)
    assert float(schedule(100)) == pytest.approx(0.01)
    warm = WarmupSchedule(0.1, steps_per_epoch=10, epochs=10, policy="cosine", warmup_epochs=1,
                          warmup_start_factor=0.0)
    assert float(warm(5)) == pytest.approx(0.1 * 0.5 * 0.5 * (1 + math.cos(math.pi * 0.05)), rel=1e-5)


def test_build_schedule_uses_the_config():
    config = Config.from_dict({"model": {"num_classes": 2}, "data": {"synthetic": {"num_classes": 2}},
                               "schedule": {"milestones": [2], "warmup_epochs": 0}, "train": {"epochs": 3}})
    schedule = build_schedule(config, base_lr=0.4, steps_per_epoch=5)
    assert float(schedule(9)) == pytest.approx(0.4) and float(schedule(10)) == pytest.approx(0.04)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_step(precision):
    """Float32 variables, low-precision compute; float16 adds dynamic loss scaling."""
    from tsm_keras.training.trainer import build_optimizer, make_train_step

    config = Config.from_dict({"model": {"backbone": "mobilenet_v2", "num_classes": 4},
                               "data": {"synthetic": {"num_classes": 4}, "resize_short": None,
                                        "crop_size": 32, "num_clips": 2},
                               "schedule": {"milestones": [], "warmup_epochs": 0},
                               "train": {"epochs": 1, "precision": precision}})
    with precision_scope(precision):
        model = build_model(config)
        optimizer = build_optimizer(config, model, 0.01)
        step = make_train_step(model, optimizer, tf.distribute.get_strategy(), 2)
        clips = np.random.default_rng(0).normal(size=(2, 2, 32, 32, 3)).astype("float32")
        batch = iter(tf.data.Dataset.from_tensors((clips, np.array([0, 3], "int32"))).repeat())
        before = model.get_layer("fc_cls").bias.numpy().copy()
        losses = [float(step.python_function(batch)[0]) for _ in range(2)]
    assert model.get_layer("fc_cls").kernel.dtype == "float32"
    assert model.get_layer("stem_conv").compute_dtype == precision.split("_")[1]
    assert all(math.isfinite(loss) for loss in losses)
    if precision == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        # A step whose scaled gradients overflow is skipped and halves the scale; otherwise applied.
        applied = int(optimizer.iterations.numpy())
        assert applied + int(round(math.log2(32768 / float(optimizer.dynamic_scale.numpy())))) == 2
    else:
        assert int(optimizer.iterations.numpy()) == 2
        assert not np.array_equal(model.get_layer("fc_cls").bias.numpy(), before)


def test_auto_scale_lr_and_steps_per_epoch(tmp_path):
    from tsm_keras.training.trainer import Trainer

    config = Config.from_dict({"model": {"backbone": "mobilenet_v2", "num_classes": 4},
                               "data": {"synthetic": {"num_classes": 4, "train_videos_per_class": 10}},
                               "optimizer": {"lr": 0.02}, "schedule": {"milestones": [], "warmup_epochs": 0},
                               "train": {"epochs": 1, "batch_per_replica": 8, "base_batch_size": 128}})
    plain = Trainer(config, tmp_path, auto_scale_lr=False)
    scaled = Trainer(config, tmp_path, auto_scale_lr=True)
    assert plain.lr == 0.02 and scaled.lr == pytest.approx(0.02 * 8 / 128)  # MMAction2's linear rule
    assert plain.steps_per_epoch == 40 // 8
