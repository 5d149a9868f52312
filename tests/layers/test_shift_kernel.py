"""The native shift kernel: where it runs, what it computes, how it is built and when it is refused.

Its outputs and gradients against the numpy definition are in test_temporal_shift.py
(every case there runs on the native kernel and on both portable forms).
"""

import collections
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tests.layers.kernel_helpers import require_native_kernel
from tsm_keras import TemporalShift, build_tsm
from tsm_keras.export import flatbuffer
from tsm_keras.export.tflite import convert_offline
from tsm_keras.layers import shift_kernel


def traced_op_types(layer, frames, training=False):
    graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(frames).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("training", [False, True])
def test_the_layer_traces_to_the_kernel_and_each_portable_form_to_its_operations(training):
    require_native_kernel()
    frames = tf.random.normal((8, 3, 3, 16))
    assert "TsmTemporalShift" in traced_op_types(TemporalShift(4), frames, training)
    with shift_kernel.portable():
        portable = traced_op_types(TemporalShift(4), frames, training)
    assert "TsmTemporalShift" not in portable
    assert {"StridedSlice", "ConcatV2"} <= portable
    with shift_kernel.portable("depthwise"):
        depthwise = traced_op_types(TemporalShift(4), frames, training)
        unknown_size = traced_op_types(TemporalShift(4), tf.TensorSpec((None, None, None, 16)), training)
    assert "DepthwiseConv2dNative" in depthwise
    assert not {"TsmTemporalShift", "ConcatV2"} & depthwise
    # The depthwise form needs the frame size when traced: without it, the slices.
    assert "DepthwiseConv2dNative" not in unknown_size and "ConcatV2" in unknown_size


def test_an_unknown_portable_form_is_refused_by_name():
    with pytest.raises(ValueError, match=r"form must be one of \('slices', 'depthwise'\), got 'gather'"):
        with shift_kernel.portable("gather"):
            pass
    assert shift_kernel.portable_form() is None


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
def test_other_float_types_match_the_portable_shift_exactly(dtype):
    require_native_kernel()
    frames = tf.cast(tf.random.normal((2 * 4, 2, 3, 24), seed=3), dtype)
    layer = TemporalShift(4, shift_div=4, dtype=dtype)
    native = layer(frames)
    with shift_kernel.portable():
        portable = layer(frames)
    assert native.dtype == frames.dtype
    np.testing.assert_array_equal(tf.cast(native, "float64").numpy(), tf.cast(portable, "float64").numpy())


def test_integer_frames_take_the_portable_shift():
    require_native_kernel()
    assert not shift_kernel.usable(tf.zeros((4, 8), "int32"))
    assert shift_kernel.usable(tf.zeros((4, 8), "float32"))


def test_a_batch_that_is_not_whole_clips_is_refused_by_name():
    require_native_kernel()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(6\) must be a multiple of num_segments \(4\)"):
        TemporalShift(4)(tf.zeros((6, 2, 2, 16)))


def test_network_gradients_match_the_portable_shift():
    """A TSM training step's loss and every variable's gradient, native kernel against slices."""
    require_native_kernel()
    model = build_tsm(
        "resnet18", num_classes=5, num_segments=4, input_shape=(32, 32, 3), layout="torch", dropout=0.0
    )
    clips = tf.random.normal((2, 4, 32, 32, 3), seed=1)

    def loss_and_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(clips, training=True)))
        return loss, tape.gradient(loss, model.trainable_variables)

    native_loss, native_gradients = loss_and_gradients()
    with shift_kernel.portable():
        portable_loss, portable_gradients = loss_and_gradients()
    np.testing.assert_allclose(native_loss.numpy(), portable_loss.numpy(), rtol=1e-6)
    for variable, native, portable in zip(model.trainable_variables, native_gradients, portable_gradients):
        np.testing.assert_allclose(native.numpy(), portable.numpy(), rtol=1e-4, atol=1e-6, err_msg=variable.path)


def test_litert_export_holds_only_builtin_operators_while_the_kernel_is_on():
    require_native_kernel()
    model = build_tsm("resnet18", num_classes=5, num_segments=4, input_shape=(32, 32, 3), layout="torch")
    assert shift_kernel.usable(tf.zeros((4, 8)))
    content = convert_offline(model)  # raises UnsupportedOpsError on a custom operator

    from ai_edge_litert.interpreter import Interpreter

    clip = np.random.default_rng(0).normal(size=(1, 4, 32, 32, 3)).astype("float32")
    runner = Interpreter(model_content=content).get_signature_runner()
    litert_logits = next(iter(runner(clip=clip).values()))
    np.testing.assert_allclose(litert_logits, model(clip, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_litert_exports_trace_one_depthwise_convolution_per_shift_unless_told_otherwise():
    """ResNet-18 has no depthwise convolution and 8 residual blocks, each shifting once."""
    model = build_tsm("resnet18", num_classes=5, num_segments=4, input_shape=(32, 32, 3), layout="torch")
    exported = collections.Counter(flatbuffer.list_ops(convert_offline(model)))
    assert exported["DEPTHWISE_CONV_2D"] == 8
    assert exported["CONCATENATION"] == 0
    with shift_kernel.portable("slices"):
        sliced = collections.Counter(flatbuffer.list_ops(convert_offline(model)))
    assert sliced["DEPTHWISE_CONV_2D"] == 0
    assert sliced["CONCATENATION"] == 8


def test_the_library_is_built_once_then_taken_from_the_cache(tmp_path):
    require_native_kernel()
    library = shift_kernel.build(tmp_path)
    assert library.parent == tmp_path and library.suffix == ".so"
    built = library.stat().st_mtime_ns
    assert shift_kernel.build(tmp_path) == library
    assert library.stat().st_mtime_ns == built
    assert not list(tmp_path.glob("*.partial"))


def test_a_missing_compiler_is_named(tmp_path):
    with pytest.raises(shift_kernel.ShiftKernelBuildError, match=re.escape("no C++ compiler: 'no-such-c++' is not on PATH")):
        shift_kernel.build(tmp_path, compiler="no-such-c++")


def test_a_failing_compiler_is_reported_with_its_exit_status(tmp_path):
    with pytest.raises(shift_kernel.ShiftKernelBuildError, match=r"false failed on .*temporal_shift\.cc \(exit 1\)"):
        shift_kernel.build(tmp_path, compiler="false")
    assert list(tmp_path.iterdir()) == []  # no library, no partial file


def failing_build(*args, **kwargs):
    raise shift_kernel.ShiftKernelBuildError("no C++ compiler: 'g++' is not on PATH")


def test_auto_mode_warns_and_falls_back_when_the_build_fails(monkeypatch):
    monkeypatch.setattr(shift_kernel, "build", failing_build)
    monkeypatch.setenv(shift_kernel.KERNEL_ENV, "auto")
    with pytest.warns(RuntimeWarning, match="unavailable .*g\\+\\+.* portable form"):
        assert shift_kernel.load.__wrapped__() is None


def test_native_mode_raises_when_the_build_fails(monkeypatch):
    monkeypatch.setattr(shift_kernel, "build", failing_build)
    monkeypatch.setenv(shift_kernel.KERNEL_ENV, "native")
    with pytest.raises(shift_kernel.ShiftKernelBuildError, match="g\\+\\+"):
        shift_kernel.load.__wrapped__()


def test_portable_mode_never_builds(monkeypatch):
    monkeypatch.setattr(shift_kernel, "load", lambda: pytest.fail("portable mode must not build the kernel"))
    monkeypatch.setenv(shift_kernel.KERNEL_ENV, "portable")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not shift_kernel.usable(tf.zeros((4, 8)))


def test_an_unknown_mode_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(shift_kernel.KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match="TSM_KERAS_SHIFT_KERNEL must be one of .*'fast'"):
        shift_kernel.usable(tf.zeros((4, 8)))
