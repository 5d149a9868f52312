"""Every config in configs/ loads, builds its model and runs one training step on tiny input.

The configs keep their recipe; only the input is shrunk (32x32 frames, no ImageNet
download) so that all rows fit the default test budget. The step is checked against
an independent expectation: with the classifier initialised at (near) zero the logits
are ~0, so the loss is ln(num_classes) and the classifier bias moves by
`-lr * warmup_start * 10 * (1/C - fraction of clips labelled c)` (lr x10 group, no
weight decay, first momentum step), scaled by the clipping factor.
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.training.config import load_config
from tsm_keras.training.schedule import build_schedule
from tsm_keras.training.trainer import build_model, build_optimizer, make_train_step

from tests import REPO_ROOT

CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
CONFIGS = sorted(name for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml"))
# Tiny input, no ImageNet download, and a classifier initialised ~0 so that the expected
# loss and classifier update below are exact to ~1e-5.
TINY = ["model.weights=null", "data.resize_short=null", "data.crop_size=32", "data.test_crop_size=null",
        "model.init_std=1.0e-7"]
BATCH = 2


def test_there_is_a_config_per_seed_row():
    expected = {
        "tsm_r50_1x1x8_50e_kinetics400.yaml", "tsm_r50_1x1x16_50e_kinetics400.yaml",
        "tsm_r50_dense_1x1x8_50e_kinetics400.yaml", "tsm_r50_nl_dot_product_1x1x8_50e_kinetics400.yaml",
        "tsm_r50_nl_gaussian_1x1x8_50e_kinetics400.yaml",
        "tsm_r50_nl_embedded_gaussian_1x1x8_50e_kinetics400.yaml",
        "tsm_mobilenetv2_1x1x8_100e_kinetics400.yaml", "tsm_mobileone_s4_1x1x16_50e_kinetics400.yaml",
        "tsm_r50_1x1x8_50e_sthv2.yaml", "tsm_r50_1x1x16_50e_sthv2.yaml", "tsm_r101_1x1x8_50e_sthv2.yaml",
        "quickstart.yaml", "quickstart_tsn.yaml",
    }
    assert expected <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_takes_one_training_step(name):
    config = load_config(os.path.join(CONFIG_DIR, name), TINY)
    num_classes = config.model.num_classes
    frames = config.data.num_frames_per_clip
    model = build_model(config)
    schedule = build_schedule(config, config.optimizer.lr, steps_per_epoch=100)
    optimizer = build_optimizer(config, model, schedule)
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), BATCH)

    rng = np.random.default_rng(0)
    clips = rng.normal(size=(BATCH, frames, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1], "int32")
    bias_before = model.get_layer("fc_cls").bias.numpy().copy()
    # Eager run of the step's Python function: same code, no graph tracing (keeps the test fast).
    iterator = iter(tf.data.Dataset.from_tensors((clips, labels)))
    loss, correct, norm = (float(value) for value in step.python_function(iterator))

    assert math.isclose(loss, math.log(num_classes), rel_tol=1e-4)
    clip = config.optimizer.clip_grad_norm
    scale = min(1.0, clip / norm) if clip else 1.0
    lr = config.optimizer.lr * (config.schedule.warmup_start_factor if config.schedule.warmup_epochs else 1.0)
    target = np.bincount(labels, minlength=num_classes) / BATCH
    expected = -lr * config.optimizer.classifier_bias_lr_mult * scale * (1.0 / num_classes - target)
    np.testing.assert_allclose(model.get_layer("fc_cls").bias.numpy() - bias_before, expected,
                               rtol=1e-3, atol=abs(expected).max() * 1e-3)
    assert int(optimizer.iterations.numpy()) == 1
