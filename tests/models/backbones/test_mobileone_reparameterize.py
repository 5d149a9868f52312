"""MobileOne reparameterization: train vs deploy parity, single-conv blocks, round trip, CLI."""

import runpy
import sys

import keras
import numpy as np
import pytest

import tsm_keras
from tsm_keras import TemporalShift, build_tsm, reparameterize
from tsm_keras.models.backbones.folding import fold_batch_norm, identity_kernel
from tsm_keras.models.backbones.mobileone import block_settings

from tests import REPO_ROOT
from tests.models.backbones.folding_helpers import (
    calibrate,
    float64,
    logits,
    randomize,
    relative_difference,
    streamed_logits,
)

FRAME = (64, 64, 3)
SEGMENTS = 4
SCRIPT = REPO_ROOT / "convert" / "reparameterize.py"
PARITY = 1e-4


def mobileone(variant, num_segments=SEGMENTS, **kwargs):
    keras.utils.set_random_seed(0)
    return build_tsm(
        f"mobileone_{variant}",
        5,
        num_segments=num_segments,
        shift_place="block",
        layout="torch",
        input_shape=FRAME,
        **kwargs,
    )


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(7).normal(size=(2, SEGMENTS) + FRAME).astype("float32")


@pytest.fixture(scope="module")
def s4_pair():
    train = randomize(mobileone("s4"))
    return train, reparameterize(train)


# ------------------------------------------------------------------ folding


def test_fold_batch_norm_by_hand():
    batch_norm = keras.layers.BatchNormalization(epsilon=1e-5)
    batch_norm.build((None, 1, 1, 2))
    batch_norm.set_weights(
        [np.array([2.0, 0.5]), np.array([1.0, -1.0]), np.array([3.0, 0.0]), np.array([4.0, 1.0])]
    )
    kernel = np.ones((1, 1, 3, 2))
    folded, bias = fold_batch_norm(kernel, batch_norm, depthwise=False)
    scale = np.array([2.0 / np.sqrt(4.0 + 1e-5), 0.5 / np.sqrt(1.0 + 1e-5)])
    np.testing.assert_allclose(folded[0, 0], np.tile(scale, (3, 1)))
    np.testing.assert_allclose(bias, [1.0 - 3.0 * scale[0], -1.0])
    # Depthwise kernels carry the channel on axis 2.
    folded, _ = fold_batch_norm(np.ones((3, 3, 2, 1)), batch_norm, depthwise=True)
    np.testing.assert_allclose(folded[1, 1, :, 0], scale)


@pytest.mark.parametrize("depthwise", [False, True])
def test_identity_kernel_is_the_identity_map(depthwise):
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype("float32")
    kernel = identity_kernel(4, 3, depthwise).astype("float32")
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)
    else:
        layer = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    layer.build(x.shape)
    layer.set_weights([kernel])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x, atol=1e-6)


# ------------------------------------------------------------------ parity


def test_s4_deploy_logits_equal_train_logits(s4_pair, clips):
    train, deploy = s4_pair
    reference = logits(train, clips)
    assert np.abs(reference).max() > 0.1  # non-trivial logits
    assert relative_difference(reference, logits(deploy, clips)) <= PARITY


def test_s0_four_branch_blocks_fold_too(clips):
    train = randomize(mobileone("s0"), seed=3)
    deploy = reparameterize(train)
    assert relative_difference(logits(train, clips), logits(deploy, clips)) <= PARITY


@pytest.mark.parametrize("variant", ["s4", "s0"])
def test_fold_is_exact_on_input_dependent_features(variant):
    """float64, BN statistics measured on the data: per-frame logits equal to ~1e-12.

    With `randomize` the logits barely depend on the input; here every
    feature is O(1) and input-dependent, so a kernel placed or oriented wrongly
    would show. float64 because such random deep nets amplify float32 rounding
    about 1000x (a 1e-6 input perturbation moves the logits by ~1e-3).
    """
    clips = np.random.default_rng(1).normal(size=(2, 2) + FRAME)
    with float64():
        train = calibrate(mobileone(variant, num_segments=2), clips)
        deploy = reparameterize(train)
        frame_logits = [
            keras.ops.convert_to_numpy(
                keras.Model(model.input, model.get_layer("fc_cls").output)(clips, training=False)
            )
            for model in (train, deploy)
        ]
    train_logits, deploy_logits = frame_logits
    assert train_logits.dtype == np.float64
    assert (
        relative_difference(train_logits[0], train_logits[2]) > 0.01
    )  # same frame index, other clip
    assert relative_difference(train_logits, deploy_logits) <= 1e-9


def test_bn_statistics_matter_so_parity_is_not_vacuous(s4_pair, clips):
    train, deploy = s4_pair
    changed = mobileone("s4")
    changed.set_weights(train.get_weights())
    moving_mean = changed.get_layer("stage4_block0_pw_branch0_bn").moving_mean
    moving_mean.assign(keras.ops.convert_to_numpy(moving_mean) - 1.0)
    assert relative_difference(logits(changed, clips), logits(deploy, clips)) > 100 * PARITY


def test_deploy_has_one_conv_per_block_and_no_branches(s4_pair):
    train, deploy = s4_pair
    settings = block_settings("s4")
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in deploy.layers)
    assert not any(isinstance(layer, keras.layers.Add) for layer in deploy.layers)
    convs = [
        layer
        for layer in deploy.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        and "_se_" not in layer.name
    ]
    assert sorted(layer.name for layer in convs) == sorted(
        f"{s.name}_reparam_conv" for s in settings
    )
    for layer in convs:
        assert layer.use_bias
    assert isinstance(
        deploy.get_layer("stage1_block1_dw_reparam_conv"), keras.layers.DepthwiseConv2D
    )
    assert deploy.get_layer("stage1_block1_pw_reparam_conv").kernel_size == (1, 1)
    assert deploy.get_layer("stage0_reparam_conv").kernel_size == (3, 3)
    # The shifts and SE layers survive unchanged; the config says deploy.
    assert sum(isinstance(layer, TemporalShift) for layer in deploy.layers) == 42
    np.testing.assert_array_equal(
        deploy.get_layer("stage4_block0_pw_se_expand").get_weights()[1],
        train.get_layer("stage4_block0_pw_se_expand").get_weights()[1],
    )
    assert deploy.tsm_config() == {**train.tsm_config(), "backbone_options": {"deploy": True}}
    assert len(deploy.layers) < len(train.layers)
    assert (
        tsm_keras.model_complexity(deploy)["params"] < tsm_keras.model_complexity(train)["params"]
    )


def test_reparameterize_refuses_other_models(s4_pair):
    _, deploy = s4_pair
    with pytest.raises(ValueError, match="already reparameterized"):
        reparameterize(deploy)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="needs a TSM .* got Sequential"):
        reparameterize(plain)


# ------------------------------------------------- round trip and command line


def run_script(*arguments, monkeypatch):
    """Runs `python convert/reparameterize.py ARGS`; returns its exit status."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *map(str, arguments)])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return exited.value.code


def test_keras_round_trip_and_cli(s4_pair, clips, tmp_path, monkeypatch, capsys):
    train, deploy = s4_pair
    source, target = tmp_path / "train.keras", tmp_path / "deploy.keras"
    train.save(source)
    loaded_train = keras.saving.load_model(source, compile=False)
    np.testing.assert_array_equal(logits(loaded_train, clips), logits(train, clips))

    assert run_script(source, target, "--check", monkeypatch=monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "max |train - deploy| / max |train|" in printed

    loaded_deploy = keras.saving.load_model(target, compile=False)
    assert isinstance(loaded_deploy, tsm_keras.TSM)
    assert loaded_deploy.backbone_options == {"deploy": True}
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in loaded_deploy.layers
    )
    np.testing.assert_allclose(
        logits(loaded_deploy, clips), logits(deploy, clips), rtol=1e-6, atol=1e-6
    )
    assert relative_difference(logits(train, clips), logits(loaded_deploy, clips)) <= PARITY


def test_cli_refuses_bad_files(tmp_path, monkeypatch, capsys):
    assert run_script(tmp_path / "missing.keras", tmp_path / "out.keras", monkeypatch=monkeypatch) == 2
    assert "expected an existing .keras" in capsys.readouterr().err
    source = tmp_path / "mobilenet.keras"
    reparameterize(build_tsm("mobilenet_v2", 5, num_segments=2, input_shape=(32, 32, 3))).save(source)
    assert run_script(source, tmp_path / "out.h5", monkeypatch=monkeypatch) == 2
    assert "must be a .keras" in capsys.readouterr().err
    assert run_script(source, tmp_path / "out.keras", monkeypatch=monkeypatch) == 1  # fails, not a usage error
    error = capsys.readouterr().err
    assert "already reparameterized" in error and error.count("\n") == 1 and "Traceback" not in error
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip archive")
    assert run_script(garbage, tmp_path / "out.keras", monkeypatch=monkeypatch) == 2
    assert "garbage.keras: cannot be loaded as a Keras model: ValueError" in capsys.readouterr().err
    assert not (tmp_path / "out.keras").exists()


def test_unidirectional_deploy_model_streams_frame_by_frame(clips):
    """train -> reparameterize -> per-frame online model: same logits as the clip model."""
    from tsm_keras.export import build_online

    train = randomize(
        mobileone("s1", direction="unidirectional", backbone_options={"shift_segments": SEGMENTS})
    )
    deploy = reparameterize(train)
    online = build_online(deploy)
    assert len(online.state_names) == 42
    assert relative_difference(logits(train, clips[:1]), streamed_logits(online, clips[0])) <= PARITY
