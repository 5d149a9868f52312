"""The `kernel` fixture: a test runs on the native shift kernel and on both portable forms of the shift."""

import shutil

import pytest

from tsm_keras.layers import shift_kernel


def require_native_kernel():
    """The loaded native kernel; skips (a failure under CI) where no C++ compiler exists."""
    compiler = shift_kernel.default_compiler()
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler}) to build the native shift kernel")
    module = shift_kernel.load()
    assert module is not None, "the native shift kernel did not build; see the RuntimeWarning"
    import tensorflow as tf

    assert shift_kernel.usable(tf.zeros((2, 8))), "the native shift kernel is built but not used"
    return module


@pytest.fixture(params=["native", *shift_kernel.PORTABLE_FORMS])
def kernel(request):
    """`"native"`: TemporalShift runs the native kernel; `"slices"`, `"depthwise"`: that portable form."""
    if request.param == "native":
        require_native_kernel()
        yield request.param
    else:
        with shift_kernel.portable(request.param):
            yield request.param
