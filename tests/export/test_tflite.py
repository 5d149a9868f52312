"""LiteRT conversion: parity with Keras, builtin ops only, signatures, int8 graph and states, metadata, CLI."""

import collections
import importlib.util
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tsm_keras import build_tsm
from tsm_keras.export import build_online, calibration, flatbuffer, metadata, tflite
from tsm_keras.export.exporter import export_tflite
from tsm_keras.export.runtime import LiteRTModel

from tests import REPO_ROOT
from tests.online_reference import per_frame_logits, relative_error, run_online

SIZE = 64
SEGMENTS = 4
CLASSES = 6


@pytest.fixture(scope="module")
def offline(tiny_tsm):
    return tiny_tsm(num_classes=CLASSES, num_segments=SEGMENTS, direction="unidirectional",
                    input_shape=(SIZE, SIZE, 3), seed=7)


@pytest.fixture(scope="module")
def online(offline):
    return build_online(offline)


@pytest.fixture(scope="module")
def clip():
    return np.random.default_rng(11).normal(size=(1, SEGMENTS, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def online_models(online):
    """Online LiteRT models by quantization, calibrated on the built-in dataset's val split."""
    config, split = calibration.calibration_config(None, (SIZE, SIZE), SEGMENTS)
    representative = calibration.representative_dataset(
        calibration.online_samples(online, calibration.calibration_clips(config, split, max_videos=6))
    )
    return {
        "fp32": tflite.convert_online(online, "fp32"),
        "fp16": tflite.convert_online(online, "fp16"),
        "int8": tflite.convert_online(online, "int8", representative, io="int8"),
    }


@pytest.fixture(scope="module")
def offline_models(offline):
    config, split = calibration.calibration_config(None, (SIZE, SIZE), SEGMENTS)
    representative = calibration.representative_dataset(
        calibration.offline_samples(calibration.calibration_clips(config, split, max_videos=6))
    )
    return {
        "fp32": tflite.convert_offline(offline, "fp32"),
        "int8": tflite.convert_offline(offline, "int8", representative, io="int8"),
    }


def stream_litert(model_content, clip):
    """Per-frame float logits of an online LiteRT model, states fed back as they come out."""
    model = LiteRTModel(Interpreter(model_content=model_content))
    states = model.zero_states()
    logits = []
    for t in range(clip.shape[1]):
        outputs = model.run({"image": model.quantize("image", clip[:, t]), **states})
        states = {name: outputs[name] for name in states}
        logits.append(model.dequantize("logits", outputs["logits"])[0])
    return np.stack(logits)


def offline_litert(model_content, clip):
    return LiteRTModel(Interpreter(model_content=model_content))({"clip": clip})["logits"]


def test_online_fp32_matches_keras(online_models, online, offline, clip):
    litert = stream_litert(online_models["fp32"], clip)
    assert relative_error(litert, run_online(online, clip)) <= 1e-4
    assert relative_error(litert, per_frame_logits(offline, clip)) <= 1e-4


def test_offline_fp32_matches_keras(offline_models, offline, clip):
    assert relative_error(offline_litert(offline_models["fp32"], clip), np.asarray(offline(clip))) <= 1e-4


def test_fp16_is_close(online_models, online, offline, clip):
    assert relative_error(stream_litert(online_models["fp16"], clip), run_online(online, clip)) <= 1e-2
    assert relative_error(stream_litert(online_models["fp16"], clip), per_frame_logits(offline, clip)) <= 1e-2
    # fp16 stores half-size weights: about half the fp32 file.
    assert len(online_models["fp16"]) < 0.6 * len(online_models["fp32"])


def test_dynamic_range_model(online_models, online, clip):
    """int8 weights, float activations and I/O: a quarter of the size, close to float."""
    content = tflite.convert_online(online, "dynamic")
    inputs, outputs = flatbuffer.signature_tensors(content)
    assert inputs["image"].dtype == "float32" and outputs["logits"].dtype == "float32"
    weights = [tensor for tensor in flatbuffer.read_model(content).subgraphs[0].tensors
               if tensor.type == flatbuffer.schema.TensorType.INT8]
    assert len(weights) >= 30  # the kernels with more than 1024 weights
    assert len(content) < 0.35 * len(online_models["fp32"])
    error = relative_error(stream_litert(content, clip), run_online(online, clip))
    print(f"dynamic-range relative logit error: {error:.2e}")
    assert error <= 5e-2


def test_signatures_have_the_documented_names(online_models, offline_models, online):
    states = set(online.state_names)
    assert len(states) == 10
    for key, content in online_models.items():
        assert list(Interpreter(model_content=content).get_signature_list()) == ["serving_default"]
        inputs, outputs = flatbuffer.signature_tensors(content)
        assert set(inputs) == {"image"} | states, key
        assert set(outputs) == {"logits"} | states, key
        assert inputs["image"].shape == (1, SIZE, SIZE, 3)
        assert outputs["logits"].shape == (1, CLASSES)
        for name in states:
            assert inputs[name].shape == outputs[name].shape == online.state_shapes[name]
    for content in offline_models.values():
        inputs, outputs = flatbuffer.signature_tensors(content)
        assert {name: info.shape for name, info in inputs.items()} == {"clip": (1, SEGMENTS, SIZE, SIZE, 3)}
        assert {name: info.shape for name, info in outputs.items()} == {"logits": (1, CLASSES)}


def test_only_builtin_ops(online_models, offline_models):
    for content in list(online_models.values()) + list(offline_models.values()):
        assert flatbuffer.custom_ops(content) == []
        assert not [name for name in flatbuffer.list_ops(content) if name.startswith("Flex")]


def test_graph_needing_flex_ops_is_refused():
    frames = keras.Input(batch_shape=(1, 8, 8, 3), name="image")
    values = keras.layers.Lambda(lambda x: tf.math.erfinv(tf.clip_by_value(x, -0.5, 0.5)), name="erfinv")(frames)
    model = keras.Model(frames, values)
    with pytest.raises(tflite.UnsupportedOpsError, match="tf.Erfinv") as error:
        tflite.convert_function(
            model, lambda image: {"values": model(image)}, [tf.TensorSpec((1, 8, 8, 3), name="image")]
        )
    assert error.value.ops == ["tf.Erfinv"]
    assert "erfinv" in str(error.value)  # where it comes from: the Keras layer


def test_int8_online_graph_is_pure_integer(online_models, online):
    content = online_models["int8"]
    ops = collections.Counter(flatbuffer.list_ops(content))
    # The shift is slices + one concatenation per shifted block, all int8.
    assert ops["CONCATENATION"] == 10 and ops["STRIDED_SLICE"] == 20
    assert ops["QUANTIZE"] == 0 and ops["DEQUANTIZE"] == 0
    assert tflite.float_islands(content) == []
    model = flatbuffer.read_model(content)
    tensor_types = {flatbuffer.schema.TensorType.INT8, flatbuffer.schema.TensorType.INT32}
    assert {tensor.type for tensor in model.subgraphs[0].tensors} <= tensor_types
    inputs, outputs = flatbuffer.signature_tensors(content)
    assert inputs["image"].dtype == "int8" and outputs["logits"].dtype == "int8"
    # Every state comes out exactly as it must go back in.
    assert flatbuffer.state_quantization_mismatches(content, online.state_names) == {}
    for name in online.state_names:
        assert inputs[name].dtype == outputs[name].dtype == "int8"
        assert inputs[name].quantization == outputs[name].quantization
        assert inputs[name].scale > 0


def test_int8_offline_graph_is_pure_integer(offline_models):
    ops = collections.Counter(flatbuffer.list_ops(offline_models["int8"]))
    assert ops["QUANTIZE"] == 0 and ops["DEQUANTIZE"] == 0
    assert tflite.float_islands(offline_models["int8"]) == []
    inputs, outputs = flatbuffer.signature_tensors(offline_models["int8"])
    assert inputs["clip"].dtype == "int8" and outputs["logits"].dtype == "int8"


def test_int8_stream_follows_the_float_model(online_models, online):
    """States fed back raw keep the int8 stream on the float model's track."""
    config, split = calibration.calibration_config(None, (SIZE, SIZE), SEGMENTS)
    clips = list(calibration.calibration_clips(config, "test", 3))  # held out from calibration
    for clip in clips:
        expected = run_online(online, clip[None])
        actual = stream_litert(online_models["int8"], clip[None])
        # Quantization noise stays a small fraction of the logit range over the frames.
        assert np.abs(actual - expected).max() <= 0.1 * np.abs(expected).max()


def test_runner_step_matches_hand_written_frame_loops(online_models, online, clip):
    """`step` / `stream_frames` (LiteRT and Keras runners) against the explicit loops above."""
    from tsm_keras.export.runtime import KerasOnlineRunner, clip_logits

    litert = LiteRTModel(Interpreter(model_content=online_models["int8"]))
    np.testing.assert_array_equal(clip_logits(litert, clip[0]), stream_litert(online_models["int8"], clip))
    assert litert.last_invoke_ms > 0
    np.testing.assert_allclose(clip_logits(KerasOnlineRunner(online), clip[0]), run_online(online, clip),
                               rtol=1e-5, atol=1e-5)


def test_check_compares_a_quantized_model_on_held_out_clips(online_models, online, offline):
    from tsm_keras.export import check

    clips = list(check.held_out_clips(offline, None, max_videos=3))
    assert len(clips) == 3 and clips[0].shape == (SEGMENTS, SIZE, SIZE, 3)
    result = check.compare_on_clips(offline, "online", online_models["int8"], clips)
    # Independent expectation: the explicit frame loops, per-frame logits averaged over each clip.
    expected = np.stack([run_online(online, clip[None]).mean(axis=0) for clip in clips])
    actual = np.stack([stream_litert(online_models["int8"], clip[None]).mean(axis=0) for clip in clips])
    assert result["videos"] == 3
    assert result["top1_agreement"] == pytest.approx(np.mean(expected.argmax(1) == actual.argmax(1)))
    # The check runs Keras in a tf.function, the reference eagerly: float32 noise of ~1e-6 on the logits.
    assert result["max_abs_error"] == pytest.approx(np.abs(actual - expected).max(), abs=1e-5)
    assert result["mean_abs_error"] == pytest.approx(np.abs(actual - expected).mean(), abs=1e-5)
    fp32 = check.compare_on_clips(offline, "online", online_models["fp32"], clips)
    assert fp32["top1_agreement"] == 1.0 and fp32["max_relative_error"] < 1e-4


def test_float_islands_are_detected():
    """A graph op without an int8 kernel is wrapped in DEQUANTIZE/QUANTIZE: reported, and refused."""
    image = keras.Input(batch_shape=(1, 8, 8, 3), name="image")
    hidden = keras.layers.Conv2D(8, 3, padding="same")(image)
    hidden = keras.layers.Lambda(lambda x: keras.ops.sin(x), name="sine")(hidden)
    model = keras.Model(image, keras.layers.Conv2D(4, 1)(hidden))
    rng = np.random.default_rng(0)
    samples = [{"image": rng.normal(size=(1, 8, 8, 3)).astype("float32")} for _ in range(8)]
    with pytest.raises(tflite.FloatIslandsError, match="SIN") as error:
        tflite.convert_function(
            model, lambda x: {"y": model(x)}, [tf.TensorSpec((1, 8, 8, 3), name="image")], "int8",
            lambda: iter(samples), "int8",
        )
    assert [name for _, name in error.value.islands] == ["DEQUANTIZE", "SIN", "QUANTIZE"]


def test_state_requantization_repairs_a_mismatch(online_models, online):
    """If a state output's scale differed from its input's, a QUANTIZE op makes them equal.

    TFLite's int8 CONCATENATION and STRIDED_SLICE keep one scale from input to output, so
    the converter ties every state's input and output; a mismatch is forged here by
    rescaling one state output tensor (a slice copies raw int8 values, so the forged
    output reads as half the true values).
    """
    name = online.state_names[0]
    model = flatbuffer.read_model(online_models["int8"])
    inputs, outputs = flatbuffer.signature_tensors(online_models["int8"])
    true_scale = outputs[name].scale
    model.subgraphs[0].tensors[outputs[name].tensor_index].quantization.scale = np.array(
        [0.5 * true_scale], np.float32)
    broken = flatbuffer.write_model(model)
    assert set(flatbuffer.state_quantization_mismatches(broken, online.state_names)) == {name}
    fixed, names = flatbuffer.requantize_state_outputs(broken, online.state_names)
    assert names == [name]
    assert flatbuffer.state_quantization_mismatches(fixed, online.state_names) == {}
    assert flatbuffer.list_ops(fixed)[-1] == "QUANTIZE"
    assert tflite.float_islands(fixed) == []
    # The repaired output holds the forged output's values on the input's scale.
    frame = np.random.default_rng(3).normal(size=(1, SIZE, SIZE, 3)).astype("float32")
    results = []
    for content in (broken, fixed):
        runner = LiteRTModel(Interpreter(
            model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        raw = runner.run({"image": runner.quantize("image", frame), **runner.zero_states()})
        results.append(runner.dequantize(name, raw[name]))
    assert np.abs(results[0]).max() > 5 * true_scale
    assert np.abs(results[1] - results[0]).max() <= 0.5 * inputs[name].scale * 1.001
    # A model that needs no repair comes back unchanged.
    assert flatbuffer.requantize_state_outputs(online_models["int8"], online.state_names) == (
        online_models["int8"], [])


def load_cli():
    spec = importlib.util.spec_from_file_location("to_tflite", os.path.join(REPO_ROOT, "convert", "to_tflite.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_int8_float_io_from_a_directory_of_videos(tmp_path, offline, capsys):
    from tsm_keras.data import synthetic

    videos = synthetic.write_videos(
        str(tmp_path / "videos"),
        {"num_classes": 2, "frame_size": SIZE, "num_frames": 8, "val_videos_per_class": 2},
        splits=("val",),
    )
    model_path = str(tmp_path / "tsm.keras")
    offline.save(model_path)
    labels = str(tmp_path / "labels.txt")
    with open(labels, "w", encoding="utf-8") as handle:
        handle.write("".join(f"action {index}\n" for index in range(CLASSES)))
    out = str(tmp_path / "tsm_online_int8.tflite")
    status = load_cli().main([model_path, "--mode", "online", "--quant", "int8", "--io", "float",
                              "--calib", os.path.join(videos["data_root"], "val"), "--labels", labels,
                              "--check", "--check-videos", "2", "--out", out])
    printed = capsys.readouterr().out
    assert status == 0
    assert "calibrated on 16 samples" in printed  # 4 videos x 4 segment frames, one sample per frame
    # A quantized model is checked on real held-out clips, not on one random input.
    assert "check on 2 held-out clips (the built-in dataset's test split): top-1 agreement " in printed
    with open(out, "rb") as handle:
        content = handle.read()
    # Float I/O: float <-> int8 conversions only at the graph boundary.
    ops = collections.Counter(flatbuffer.list_ops(content))
    assert ops["QUANTIZE"] == 11 and ops["DEQUANTIZE"] == 11  # image + 10 states in; logits + 10 out
    assert tflite.float_islands(content) == []
    inputs, outputs = flatbuffer.signature_tensors(content)
    assert all(tensor.dtype == "float32" for tensor in list(inputs.values()) + list(outputs.values()))
    # The sidecar carries what a runner needs.
    with open(out + ".json", encoding="utf-8") as handle:
        raw = json.load(handle)
    assert raw["format"] == metadata.FORMAT and raw["num_classes"] == CLASSES
    info = metadata.load_metadata(out)
    assert info.mode == "online" and info.quant == "int8" and info.io == "float"
    assert info.calibration["samples"] == 16
    assert info.labels == [f"action {index}" for index in range(CLASSES)]
    assert info.state_names == list(build_online(offline).state_names)
    assert info.input_size == (SIZE, SIZE) and info.num_segments == SEGMENTS
    assert (info.shift_div, info.shift_place, info.direction) == (8, "blockres", "unidirectional")
    assert info.mean == metadata.IMAGENET_MEAN and info.std == metadata.IMAGENET_STD
    inputs, outputs = flatbuffer.signature_tensors(content)
    assert {entry["name"]: (tuple(entry["shape"]), entry["scale"], entry["zero_point"])
            for entry in info.inputs + info.outputs} == {
        name: (tensor.shape, tensor.scale, tensor.zero_point) for name, tensor in {**inputs, **outputs}.items()
    }
    os.remove(out + ".json")
    with pytest.raises(FileNotFoundError, match=r"tsm_online_int8\.tflite\.json"):
        metadata.load_metadata(out)


def test_cli_refuses_bidirectional_online_export(tmp_path, capsys):
    model_path = str(tmp_path / "bidirectional.keras")
    build_tsm("mobilenet_v2", num_classes=CLASSES, num_segments=SEGMENTS, input_shape=(SIZE, SIZE, 3)).save(model_path)
    assert load_cli().main([model_path, "--mode", "online", "--out", str(tmp_path / "x.tflite")]) == 1
    error = capsys.readouterr().err
    assert "expect the future" in error and error.startswith("tsm-export: error: ") and error.count("\n") == 1
    assert load_cli().main([model_path, "--mode", "offline", "--io", "int8", "--out", str(tmp_path / "x.tflite")]) == 2
    assert "--io int8 needs --quant int8" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="io='int8' needs quant='int8'"):
        export_tflite(keras.saving.load_model(model_path), str(tmp_path / "x.tflite"), mode="offline", io="int8")


def test_cli_refuses_a_model_safe_mode_refuses_in_one_line(tmp_path, capsys):
    inputs = keras.Input((SIZE, SIZE, 3))
    model_path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(model_path)
    assert load_cli().main([model_path, "--mode", "offline", "--out", str(tmp_path / "x.tflite")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"tsm-export: error: {model_path}: cannot be loaded as a Keras model: it holds Python code")
    assert error.count("\n") == 1
    garbage = str(tmp_path / "garbage.keras")
    with open(garbage, "wb") as handle:
        handle.write(b"not a zip archive")
    assert load_cli().main([garbage, "--mode", "offline", "--out", str(tmp_path / "x.tflite")]) == 2
    assert "garbage.keras: cannot be loaded as a Keras model: ValueError" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.tflite")


def test_data_config_follows_the_base_chain():
    """`--data-config configs/quickstart_online.yaml` (a `base:` and a model section only)."""
    from tsm_keras.export.exporter import load_data_config
    from tsm_keras.training.config import load_config

    path = os.path.join(REPO_ROOT, "configs", "quickstart_online.yaml")
    assert load_data_config(path) == load_config(path).data
    assert load_data_config(path).synthetic.num_classes == 10
