"""TSM models: placement, equivalences, causality, complexity and Keras behaviour."""

import keras
import numpy as np
import pytest

import tsm_keras
from tsm_keras import TSM, TemporalShift, build_tsm, model_complexity
from tsm_keras.layers import NonLocal, TemporalPool
from tsm_keras.models import ModelFileError, load_tsm

SMALL = (64, 64, 3)


def shift_layers(model):
    return [layer for layer in model.layers if isinstance(layer, TemporalShift)]


def first_consumer(model, layer):
    """Name of the layer that consumes `layer`'s output."""
    for other in model.layers:
        for node in other._inbound_nodes:
            if any(t is layer.output for t in node.input_tensors):
                return other.name
    return None


# ---------------------------------------------------------------- placement


@pytest.mark.parametrize(
    "backbone,shift_place,expected",
    [
        ("resnet50", "blockres", 16),
        ("resnet50", "block", 16),
        ("resnet101", "blockres", 18),  # even-index blocks only: 2 + 2 + 12 + 2
        ("resnet101", "block", 33),
        ("mobilenet_v2", "blockres", 10),
    ],
)
def test_number_of_shift_layers(backbone, shift_place, expected):
    model = build_tsm(backbone, 10, shift_place=shift_place, input_shape=SMALL, layout="torch")
    assert len(shift_layers(model)) == expected


def test_resnet101_shifts_even_blocks_of_every_stage():
    model = build_tsm("resnet101", 10, input_shape=SMALL, layout="torch")
    names = {layer.name for layer in shift_layers(model)}
    expected = {
        f"layer{stage}_block{index}_shift"
        for stage, blocks in zip((1, 2, 3, 4), (3, 4, 23, 3))
        for index in range(0, blocks, 2)
    }
    assert names == expected


@pytest.mark.parametrize("layout", ["keras", "torch"])
def test_resnet50_blockres_shift_feeds_conv1_only(layout):
    model = build_tsm("resnet50", 10, input_shape=SMALL, layout=layout)
    for layer in shift_layers(model):
        block = layer.name[: -len("_shift")]
        assert first_consumer(model, layer) == f"{block}_conv1"
        # The identity / downsample path reads the unshifted block input.
        add = model.get_layer(f"{block}_add")
        assert not any(t is layer.output for t in add._inbound_nodes[0].input_tensors)


def test_resnet50_block_placement_shifts_the_block_input():
    model = build_tsm("resnet50", 10, shift_place="block", input_shape=SMALL, layout="torch")
    shift = model.get_layer("layer1_block1_shift")
    add = model.get_layer("layer1_block1_add")
    assert any(t is shift.output for t in add._inbound_nodes[0].input_tensors)


def test_mobilenet_v2_shifts_the_reference_blocks_before_expansion():
    model = build_tsm("mobilenet_v2", 10, input_shape=(224, 224, 3))
    layers = shift_layers(model)
    assert [layer.name for layer in layers] == [
        f"block{i}_shift" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)
    ]
    assert [layer.input.shape[-1] for layer in layers] == [24, 32, 32, 64, 64, 64, 96, 96, 160, 160]
    for layer in layers:
        assert first_consumer(model, layer) == layer.name.replace("_shift", "_expand_conv")


def test_non_local_blocks_sit_after_the_reference_blocks():
    model = build_tsm("resnet50", 10, non_local="embedded_gaussian", input_shape=SMALL)
    names = [layer.name for layer in model.layers if isinstance(layer, NonLocal)]
    assert names == [
        "layer2_block0_non_local",
        "layer2_block2_non_local",
        "layer3_block0_non_local",
        "layer3_block2_non_local",
        "layer3_block4_non_local",
    ]
    for name in names:
        block = name[: -len("_non_local")]
        assert model.get_layer(name).input is model.get_layer(f"{block}_out").output


def test_temporal_pool_halves_time_for_later_shifts():
    model = build_tsm("resnet50", 10, temporal_pool=True, input_shape=SMALL)
    pool = [layer for layer in model.layers if isinstance(layer, TemporalPool)]
    assert [layer.name for layer in pool] == ["temporal_pool"]
    segments = {layer.name: layer.num_segments for layer in shift_layers(model)}
    assert segments["layer1_block0_shift"] == 8
    assert segments["layer2_block0_shift"] == 4
    assert model.get_layer("consensus").num_segments == 4
    clips = np.random.default_rng(0).normal(size=(2, 8) + SMALL).astype("float32")
    assert model.predict(clips, verbose=0).shape == (2, 10)


@pytest.mark.parametrize("option", [{"temporal_pool": True}, {"non_local": "gaussian"}])
def test_mobilenet_v2_refuses_resnet_only_options(option):
    (name,) = option
    with pytest.raises(ValueError, match=rf"model\.{name}: expected null/false for backbone 'mobilenet_v2'"):
        build_tsm("mobilenet_v2", 10, input_shape=SMALL, **option)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101", "mobilenet_v2"])
@pytest.mark.parametrize("layout", ["keras", "torch"])
def test_every_backbone_builds_in_both_layouts(backbone, layout):
    model = build_tsm(backbone, 7, num_segments=4, input_shape=SMALL, layout=layout)
    assert model.output_shape == (None, 7)
    assert model.input_shape == (None, 4) + SMALL


def test_layouts_differ_where_pytorch_and_keras_do():
    keras_model = build_tsm("resnet50", 10, input_shape=SMALL, layout="keras")
    torch_model = build_tsm("resnet50", 10, input_shape=SMALL, layout="torch")
    # keras.applications: stride on the first 1x1 conv, conv biases, eps 1.001e-5.
    assert keras_model.get_layer("layer2_block0_conv1").strides == (2, 2)
    assert keras_model.get_layer("layer2_block0_conv2").strides == (1, 1)
    assert keras_model.get_layer("layer2_block0_conv1").use_bias
    assert keras_model.get_layer("stem_bn").epsilon == pytest.approx(1.001e-5)
    # ResNet v1.5 (PyTorch): stride on the 3x3 conv behind a symmetric pad, no biases.
    assert torch_model.get_layer("layer2_block0_conv1").strides == (1, 1)
    assert torch_model.get_layer("layer2_block0_conv2").strides == (2, 2)
    # The ReLU before that conv pads its own output (PaddedReLU), the conv is "valid".
    assert torch_model.get_layer("layer2_block0_relu1").padding == 1
    assert torch_model.get_layer("layer2_block0_conv2").padding == "valid"
    assert keras_model.get_layer("layer2_block0_conv2").padding == "same"
    assert not torch_model.get_layer("layer2_block0_conv1").use_bias
    assert torch_model.get_layer("stem_bn").epsilon == pytest.approx(1e-5)


# ----------------------------------------------------------- equivalences


def per_frame_reference(application, weights_path, clips, head):
    """A plain keras.applications 2D CNN run frame by frame, then a mean over T."""
    batch, time = clips.shape[:2]
    cnn = application(include_top=False, weights=weights_path, input_shape=clips.shape[2:])
    features = cnn.predict(clips.reshape((-1,) + clips.shape[2:]), verbose=0)
    pooled = features.mean(axis=(1, 2))
    kernel, bias = head
    logits = pooled @ kernel + bias
    return logits.reshape(batch, time, -1).mean(axis=1)


@pytest.mark.parametrize(
    "backbone,application",
    [
        ("mobilenet_v2", keras.applications.MobileNetV2),
        ("resnet50", keras.applications.ResNet50),
    ],
)
def test_tsn_twin_equals_per_frame_cnn_with_keras_weights(backbone, application, tmp_path):
    # A randomly initialised keras.applications backbone with perturbed BN
    # statistics stands in for the ImageNet file (no downloads here).
    source = application(include_top=False, weights=None, input_shape=SMALL)
    rng = np.random.default_rng(3)
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    gamma * rng.uniform(0.5, 1.5, gamma.shape),
                    beta + rng.normal(0, 0.1, beta.shape),
                    mean + rng.normal(0, 0.1, mean.shape),
                    variance * rng.uniform(0.5, 2.0, variance.shape),
                ]
            )
    weights_path = str(tmp_path / f"{backbone}_notop.weights.h5")
    source.save_weights(weights_path)

    model = build_tsm(
        backbone, 5, num_segments=4, shift=False, input_shape=SMALL, weights=weights_path
    )
    assert not shift_layers(model)
    head = [w * 50 for w in model.get_layer("fc_cls").get_weights()]
    model.get_layer("fc_cls").set_weights(head)
    clips = rng.normal(size=(2, 4) + SMALL).astype("float32")
    expected = per_frame_reference(application, weights_path, clips, head)
    got = model.predict(clips, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_tsn_twin_is_the_tsm_without_shift_layers():
    tsm = build_tsm("mobilenet_v2", 6, num_segments=4, input_shape=SMALL)
    tsn = build_tsm("mobilenet_v2", 6, num_segments=4, shift_div=0, input_shape=SMALL)
    assert [w.shape for w in tsm.weights] == [w.shape for w in tsn.weights]
    assert len(shift_layers(tsm)) == 10 and not shift_layers(tsn)
    tsn.set_weights(tsm.get_weights())
    clips = np.random.default_rng(4).normal(size=(1, 4) + SMALL).astype("float32")
    with_shift, without = per_frame_features(tsm, clips), per_frame_features(tsn, clips)
    assert differs(with_shift, without)


# ---------------------------------------------------------------- causality


def differs(a, b):
    """Relative difference check, robust to the tiny activations of random nets."""
    return np.abs(a - b).max() > 1e-3 * np.abs(b).max()


def per_frame_features(model, clips):
    extractor = keras.Model(model.input, model.get_layer("avg_pool").output)
    return extractor.predict(clips, verbose=0).reshape(clips.shape[0], clips.shape[1], -1)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_unidirectional_model_is_causal(backbone):
    num_segments, changed = 6, 3
    rng = np.random.default_rng(5)
    clips = rng.normal(size=(1, num_segments) + SMALL).astype("float32")
    edited = clips.copy()
    edited[:, changed] = rng.normal(size=SMALL)

    online = build_tsm(backbone, 4, num_segments=num_segments, direction="unidirectional", input_shape=SMALL)
    before, after = per_frame_features(online, clips), per_frame_features(online, edited)
    np.testing.assert_array_equal(before[:, :changed], after[:, :changed])
    assert differs(before[:, changed:], after[:, changed:])

    offline = build_tsm(backbone, 4, num_segments=num_segments, input_shape=SMALL)
    offline.set_weights(online.get_weights())
    before, after = per_frame_features(offline, clips), per_frame_features(offline, edited)
    assert differs(before[:, changed - 1], after[:, changed - 1])


# --------------------------------------------------------------- complexity

TABLE = [
    # (build_tsm kwargs, table FLOPs in G, table params in M); docs/reference.md#flops-and-parameters
    (dict(backbone="resnet50", num_classes=174), 32.88, 23.87),
    (dict(backbone="resnet50", num_classes=400), 32.88, 24.33),
    (dict(backbone="resnet50", num_classes=174, num_segments=16), 65.75, 23.87),
    (dict(backbone="resnet101", num_classes=174), 62.66, 42.86),
    (dict(backbone="resnet50", num_classes=400, non_local="embedded_gaussian"), 61.30, 31.68),
    (dict(backbone="resnet50", num_classes=400, non_local="dot_product"), 61.30, 31.68),
    (dict(backbone="resnet50", num_classes=400, non_local="gaussian"), 59.06, 28.00),
    (dict(backbone="mobilenet_v2", num_classes=400, input_shape=(256, 256, 3)), 3.269, 2.736),
    (dict(backbone="mobilenet_v2", num_classes=400), 2.503, 2.736),
]


@pytest.mark.parametrize("kwargs,flops,params", TABLE)
def test_complexity_reproduces_the_table(kwargs, flops, params):
    result = model_complexity(build_tsm(layout="torch", **kwargs))
    assert result["flops"] / 1e9 == pytest.approx(flops, rel=0.01)
    assert result["params"] / 1e6 == pytest.approx(params, rel=0.01)


def test_complexity_hand_count_for_a_tiny_network():
    """Stem conv of ResNet-50 on one 32x32 frame, counted by hand."""
    model = build_tsm("resnet50", 3, num_segments=1, input_shape=(32, 32, 3), layout="torch")
    flops = model_complexity(model)["flops"]
    stem = 16 * 16 * 64 * (7 * 7 * 3) + 2 * 16 * 16 * 64  # conv + BN on a 16x16x64 map
    stem_model = keras.Model(model.input, model.get_layer("stem_bn").output)
    assert model_complexity(stem_model)["flops"] == stem
    assert flops > stem
    # Temporal pool halves the frames seen by stages 2-4.
    pooled = build_tsm("resnet50", 3, num_segments=8, temporal_pool=True, layout="torch")
    plain = build_tsm("resnet50", 3, num_segments=8, layout="torch")
    assert model_complexity(pooled)["flops"] < 0.65 * model_complexity(plain)["flops"]


# ----------------------------------------------------------- Keras behaviour


def small_model(**kwargs):
    return build_tsm("mobilenet_v2", 5, num_segments=4, input_shape=SMALL, **kwargs)


def test_predict_fit_and_keras_round_trip(tmp_path):
    model = small_model()
    rng = np.random.default_rng(6)
    clips = rng.normal(size=(3, 4) + SMALL).astype("float32")
    labels = np.array([0, 3, 4])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(clips, labels, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    path = tmp_path / "tsm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True by default
    assert isinstance(loaded, TSM)
    assert loaded.tsm_config() == model.tsm_config()
    assert load_tsm(path).tsm_config() == model.tsm_config()
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(plain)
    with pytest.raises(ModelFileError, match=r"plain\.keras: not a tsm_keras TSM \(got Sequential\)"):
        load_tsm(plain)
    np.testing.assert_array_equal(
        loaded.predict(clips, verbose=0), model.predict(clips, verbose=0)
    )


def test_weights_file_round_trip(tmp_path):
    model = small_model()
    path = str(tmp_path / "tsm.weights.h5")
    model.save_weights(path)
    clone = small_model()
    clone.load_weights(path)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_non_local_model_round_trip(tmp_path, tiny_tsm, round_trip):
    model = tiny_tsm(backbone="resnet50", num_classes=4, num_segments=2, non_local="gaussian")
    clips = np.random.default_rng(7).normal(size=(1, 2, 32, 32, 3)).astype("float32")
    loaded = round_trip(model, clips, tmp_path)
    assert loaded.non_local == "gaussian" and loaded.get_layer("layer3_block4_non_local").mode == "gaussian"


def test_mixed_precision_builds_and_runs():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_model()
        clips = np.random.default_rng(8).normal(size=(2, 4) + SMALL).astype("float32")
        logits = model.predict(clips, verbose=0)
        assert model.get_layer("block2_expand_conv").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert logits.shape == (2, 5) and np.all(np.isfinite(logits))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_model_arguments_are_refused():
    with pytest.raises(ValueError, match=r"model.backbone: expected one of \[.*\], got .vgg16."):
        build_tsm("vgg16", 10)
    with pytest.raises(ValueError, match="shift_place"):
        build_tsm("resnet50", 10, shift_place="everywhere")
    with pytest.raises(ValueError, match="layout"):
        build_tsm("resnet50", 10, layout="caffe")
    with pytest.raises(ValueError, match="non_local"):
        build_tsm("resnet50", 10, non_local="cosine")


def test_public_api():
    for name in ("TemporalShift", "build_tsm", "model_complexity", "TSM"):
        assert hasattr(tsm_keras, name)
