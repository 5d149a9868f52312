"""The deploy form of ResNet and MobileNetV2: every BatchNormalization folded into its conv."""

import keras
import numpy as np
import pytest

import tsm_keras
from tsm_keras import build_tsm, reparameterize
from tsm_keras.models.backbones.folding import fold_conv_batch_norms
from tsm_keras.models.precision import model_precision, with_precision
from tsm_keras.models.reparameterize import inference_form, is_deploy_form

from tests.models.backbones.folding_helpers import calibrate, logits, relative_difference, streamed_logits

FRAME = (48, 48, 3)
SEGMENTS = 4
PARITY = 1e-4

CASES = {
    "resnet50-torch": dict(backbone="resnet50", layout="torch"),
    "resnet50-keras": dict(backbone="resnet50", layout="keras"),  # conv biases fold too
    "resnet50-non-local-pool": dict(
        backbone="resnet50", layout="torch", non_local="embedded_gaussian", temporal_pool=True
    ),
    "resnet18-torch": dict(backbone="resnet18", layout="torch"),
    "mobilenet_v2-torch": dict(backbone="mobilenet_v2", layout="torch"),  # depthwise convs
    "mobilenet_v2-keras": dict(backbone="mobilenet_v2", layout="keras"),
}


def build(case, num_segments=SEGMENTS, **kwargs):
    """The case's TSM; conv biases (layout `"keras"`) random rather than zero."""
    keras.utils.set_random_seed(0)
    options = dict(CASES[case], num_segments=num_segments, input_shape=FRAME, **kwargs)
    model = build_tsm(options.pop("backbone"), 5, **options)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(3).normal(size=(2, SEGMENTS) + FRAME).astype("float32")


def normalizations(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_deploy_logits_equal_train_logits(case, clips):
    # Statistics measured on the clips, random affine terms: the logits depend
    # on the input, and every normalization changes them.
    train = calibrate(build(case), clips)
    deploy = reparameterize(train)
    assert deploy.backbone_options == {"deploy": True}
    assert is_deploy_form(deploy) and not is_deploy_form(train)
    assert not normalizations(deploy)
    assert len(deploy.layers) == len(train.layers) - len(normalizations(train))
    # Each normalization's 4 vectors go; each conv without a bias gains one.
    convs = [layer for layer in train.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    removed = sum(4 * layer.moving_mean.shape[0] for layer in normalizations(train))
    added = sum(int(np.prod(layer.kernel.shape[2:])) if isinstance(layer, keras.layers.DepthwiseConv2D)
                else layer.filters for layer in convs if not layer.use_bias)
    assert deploy.count_params() == train.count_params() - removed + added
    reference, folded = logits(train, clips), logits(deploy, clips)
    assert np.abs(reference.std(axis=1)).min() > 1e-3
    assert relative_difference(reference, folded) <= PARITY


def test_folded_conv_by_hand():
    """One conv + BN of a ResNet-18 against the formula written out with numpy."""
    train = calibrate(build("resnet18-torch"), np.ones((1, SEGMENTS) + FRAME, "float32"))
    conv, norm = train.get_layer("layer1_block0_conv1"), train.get_layer("layer1_block0_bn1")
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in norm.get_weights())
    kernel, bias = fold_conv_batch_norms({conv.name: conv})[conv.name]
    scale = gamma / np.sqrt(variance + 1e-5)
    np.testing.assert_allclose(kernel, np.asarray(conv.get_weights()[0]) * scale, rtol=1e-12)
    np.testing.assert_allclose(bias, beta - mean * scale, rtol=1e-12)
    deploy = reparameterize(train).get_layer("layer1_block0_conv1")
    assert deploy.use_bias
    np.testing.assert_allclose(deploy.get_weights()[1], bias, rtol=1e-6)


def test_conv_feeding_two_layers_is_refused():
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, name="shared_conv")(inputs)
    outputs = keras.layers.Add()([keras.layers.BatchNormalization()(features), features])
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'shared_conv' feeds .* only consumer"):
        fold_conv_batch_norms({layer.name: layer for layer in model.layers})


def test_inference_form_and_round_trip(clips, tmp_path):
    train = calibrate(build("mobilenet_v2-torch"), clips)
    deploy = inference_form(train)
    assert inference_form(deploy) is deploy
    with pytest.raises(ValueError, match="already reparameterized"):
        reparameterize(deploy)
    path = tmp_path / "deploy.keras"
    deploy.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded, tsm_keras.TSM) and is_deploy_form(loaded)
    np.testing.assert_allclose(logits(loaded, clips), logits(deploy, clips), rtol=1e-6, atol=1e-6)


def test_deploy_form_keeps_the_precision(clips):
    train = with_precision(calibrate(build("resnet18-torch"), clips), "bfloat16")
    deploy = reparameterize(train)
    assert model_precision(deploy) == "bfloat16"
    assert deploy.get_layer("stem_conv").compute_dtype == "bfloat16"


def test_online_model_of_the_deploy_form_streams_frame_by_frame(clips):
    """train -> deploy form -> per-frame online model: the clip model's logits."""
    from tsm_keras.export import build_online

    train = calibrate(build("mobilenet_v2-torch", direction="unidirectional"), clips)
    online = build_online(reparameterize(train))
    assert relative_difference(logits(train, clips[:1]), streamed_logits(online, clips[0])) <= PARITY
