"""The `tsm-*` commands' shared conventions (`tsm_keras.cli.common`) and the lazy package import."""

import os
import subprocess
import sys

import pytest

from tsm_keras.cli import common
from tsm_keras.training import reporting

from tests import REPO_ROOT

COMMANDS = ("train", "test", "import_torch", "export", "reparameterize", "predict", "stream", "android_bench",
            "make_tfrecords", "synthetic_videos")


def python(code, *arguments):
    """Runs `python -c code` from the repository (this checkout first on the path)."""
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=environment, timeout=300)


def toy_command(body, tensorflow=False):
    """A command with one positional argument whose `run` is `body`."""
    parser = common.ArgumentParser("tsm-toy", "A toy command.")
    parser.add_argument("name")
    return lambda argv: common.main(parser, body, argv, tensorflow=tensorflow)


def test_every_help_parses_without_tensorflow_or_keras():
    code = (
        "import contextlib, io, sys\n"
        f"for name in {COMMANDS!r}:\n"
        "    module = __import__('tsm_keras.cli.' + name, fromlist=['main'])\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as shown:\n"
        "        assert module.main(['--help']) == 0, name\n"
        "    assert 'usage: tsm-' in shown.getvalue() and '--verbose' in shown.getvalue(), name\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_console_scripts_match_the_command_modules():
    import ast

    with open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    scripts = next(ast.literal_eval(keyword.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                   for keyword in node.keywords if keyword.arg == "entry_points")["console_scripts"]
    targets = dict(line.split("=") for line in scripts)
    assert sorted(targets.values()) == sorted(f"tsm_keras.cli.{name}:main" for name in COMMANDS)
    for script, target in targets.items():
        module = __import__(target.split(":")[0], fromlist=["main"])
        assert module.build_parser().prog == script


def test_usage_errors_exit_2_on_one_line(capsys):
    command = toy_command(lambda args: None)
    assert command([]) == 2
    assert capsys.readouterr().err == "tsm-toy: error: the following arguments are required: name\n"
    assert command(["a", "--unknown"]) == 2
    assert capsys.readouterr().err == "tsm-toy: error: unrecognized arguments: --unknown\n"

    def refuse(args):
        raise common.UsageError(f"--name {args.name}: no such file")

    assert toy_command(refuse)(["x"]) == 2
    assert capsys.readouterr().err == "tsm-toy: error: --name x: no such file\n"


def test_failures_exit_1_on_one_line_and_debug_shows_the_traceback(capsys):
    def fail(args):
        raise ValueError("first line\n  second line\n")

    assert toy_command(fail)(["x"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "tsm-toy: error: first line second line\n" and captured.out == ""
    assert toy_command(fail)(["x", "--debug"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("Traceback (most recent call last):") and "in fail" in error
    assert error.splitlines()[-1] == "tsm-toy: error: first line second line"

    def bug(args):
        return {}["missing"]

    assert toy_command(bug)(["x"]) == 1
    assert capsys.readouterr().err == "tsm-toy: error: KeyError: 'missing'\n"

    def exits(args):
        raise SystemExit("no video could be streamed")

    assert toy_command(exits)(["x"]) == 1
    assert capsys.readouterr().err == "tsm-toy: error: no video could be streamed\n"


def test_status_and_help():
    assert toy_command(lambda args: None)(["x"]) == 0
    assert toy_command(lambda args: 3)(["x"]) == 3
    assert toy_command(lambda args: None)(["--help"]) == 0


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path):
    """A command that loads TensorFlow, then fails: stderr is its one error line, nothing else."""
    model, video = tmp_path / "model.txt", tmp_path / "video.mp4"
    model.write_text("not a model")
    video.write_bytes(b"")
    code = "import sys; from tsm_keras.cli.predict import main; sys.exit(main(sys.argv[1:]))"
    quiet = python(code, str(model), str(video))
    assert quiet.returncode == 1
    assert quiet.stderr == f"tsm-predict: error: {model}: expected a .keras or .tflite model\n"
    verbose = python(code, str(model), str(video), "--verbose")
    assert verbose.returncode == 1
    assert verbose.stderr.splitlines()[-1] == quiet.stderr.strip()


def test_held_back_stderr_is_written_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError):
        with common.held_back_stderr():
            os.write(2, b"library start-up line\n")
            raise RuntimeError("import failed")
    assert capfd.readouterr().err == "library start-up line\n"
    with common.held_back_stderr():
        os.write(2, b"hidden\n")
    assert capfd.readouterr().err == ""


@pytest.fixture(scope="module")
def saved_tsm(tmp_path_factory):
    from tsm_keras import build_tsm

    path = str(tmp_path_factory.mktemp("cli") / "tiny.keras")
    build_tsm("mobilenet_v2", 3, num_segments=2, input_shape=(32, 32, 3)).save(path)
    return path


@pytest.mark.parametrize("imports", [
    "import tsm_keras; import keras",
    "import keras; import tsm_keras",
    "import tsm_keras.layers; import keras",
])
def test_import_tsm_keras_registers_the_serializables_in_either_order(saved_tsm, imports):
    code = (f"import sys; {imports}\n"
            "assert 'tsm_keras.models' in sys.modules  # registered once Keras was loaded\n"
            "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "print(type(model).__module__, type(model).__name__)\n")
    result = python(code, saved_tsm)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["tsm_keras.models.tsm", "TSM"]


def test_import_tsm_keras_loads_neither_keras_nor_tensorflow():
    result = python("import sys, tsm_keras; print(sorted(m for m in sys.modules if m.split('.')[0] in "
                    "('tensorflow', 'keras')), tsm_keras.__version__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "0.1.0"]


def test_public_api_resolves_lazily():
    import tsm_keras
    from tsm_keras.models import TSM, build_tsm

    assert tsm_keras.TSM is TSM and tsm_keras.build_tsm is build_tsm
    assert {"TSM", "OnlineTSM", "reparameterize"} <= set(dir(tsm_keras))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tsm_keras.nope


@pytest.mark.parametrize("verbose, expected", [(1, "line"), (2, "line"), (0, "")])
def test_epoch_progress_off_a_terminal_is_one_plain_line(capsys, verbose, expected):
    """capsys' stdout is not a terminal: a bar (verbose 1) becomes the one line of verbose 2."""
    progress = reporting.EpochProgress(epoch=0, epochs=2, steps=3, start_step=0, global_batch=4, verbose=verbose)
    for step in (1, 2, 3):
        progress.update(step, loss=0.5 * step, top1=0.25, lr=0.01)
    printed = capsys.readouterr().out
    if not expected:
        assert printed == ""
        return
    assert printed.count("\n") == 1 and "\r" not in printed and "\x1b" not in printed
    assert printed.startswith("Epoch 1/2: 3 steps, loss 1.5  top1 0.25  lr 0.01  clips/s ")


def test_export_choices_are_the_exporters():
    """`tsm-export` spells its choices out (so that --help needs no TensorFlow); they must not drift."""
    from tsm_keras.cli import export
    from tsm_keras.export import exporter, tflite

    assert export.MODES == exporter.MODES
    assert export.QUANT_MODES == tflite.QUANT_MODES
    assert export.IO_TYPES == tflite.IO_TYPES


def test_precision_choices_are_the_inference_precisions():
    """`tsm-test` / `tsm-predict --precision` spell their choices out too."""
    from tsm_keras.models.precision import INFERENCE_PRECISIONS

    assert common.PRECISIONS == INFERENCE_PRECISIONS


def test_train_on_a_list_with_nothing_decodable_fails_in_one_line(tmp_path, tiny_config_file, capsys):
    """The data error crosses tf.data as a TensorFlow error; the command prints its line only."""
    from tsm_keras.cli.train import main as train

    (tmp_path / "notes.mp4").write_text("not a video\n")
    (tmp_path / "list.txt").write_text("missing.mp4 0\nnotes.mp4 1\n")
    (tmp_path / "labels.txt").write_text("left\nright\n")
    data = {"source": "video", "train_list": str(tmp_path / "list.txt"), "data_root": str(tmp_path),
            "label_map": str(tmp_path / "labels.txt"), "num_parallel_calls": 1}
    config = tiny_config_file(tmp_path / "config.yaml", data=data, train={"val_interval": 0})
    code = train(["--config", str(config), "--work-dir", str(tmp_path / "work"), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert error[-1].startswith(f"tsm-train: error: {tmp_path / 'list.txt'}: no video of the list could be read")
    assert "Traceback" not in "\n".join(error)
