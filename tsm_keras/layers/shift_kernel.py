"""The temporal shift as one native TensorFlow CPU kernel, built on first use.

`TemporalShift` writes the shift with slicing, zero padding and one
concatenation: portable to every Keras backend and to LiteRT's builtin ops, but
on a CPU it moves each block input about twice. The kernel of
`kernels/temporal_shift.cc` reads and writes it once. On the TensorFlow backend
of a CPU-only machine `TemporalShift` uses it when it can be built; the outputs
and gradients are the same, bit for bit.

The kernel is compiled with the C++ compiler (`$CXX`, else `g++`) against the
installed TensorFlow's headers the first time a process needs it (about 10 s),
then loaded from the cache: `$TSM_KERAS_CACHE/kernels`, by default
`~/.cache/tsm_keras/kernels`, one library per TensorFlow version and source.

`TSM_KERAS_SHIFT_KERNEL` chooses:

- `auto` (default): the native kernel where it applies, else the portable
  shift; a failed build warns once and falls back;
- `native`: the same, but a failed build raises `ShiftKernelBuildError`;
- `portable`: always the slicing form (what XLA `jit_compile` needs: the kernel
  has no XLA lowering).

A graph meant for another runtime must be traced inside `portable()`, which
also chooses the form of the shift there: `"slices"` (the default) or
`"depthwise"`, one depthwise convolution over time with fixed 0/1 taps, which
LiteRT runs as one operator where the slices take five copies.
`tsm_keras.export` traces its LiteRT models in the depthwise form, so that they
hold only builtin operators; trace a SavedModel meant for another machine
inside `portable()` around `model.export(...)`. `.keras` files hold no graph and
are unaffected.
"""

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import keras

KERNEL_ENV = "TSM_KERAS_SHIFT_KERNEL"
CACHE_ENV = "TSM_KERAS_CACHE"
MODES = ("auto", "native", "portable")
PORTABLE_FORMS = ("slices", "depthwise")
SOURCE = Path(__file__).with_name("kernels") / "temporal_shift.cc"
SUPPORTED_DTYPES = ("float32", "float64", "bfloat16", "float16")
BUILD_TIMEOUT_SECONDS = 600

_portable_forms = []  # the open `portable()` blocks' forms, innermost last
_gradient_registered = False


class ShiftKernelBuildError(RuntimeError):
    """The native shift kernel could not be compiled or loaded."""


def kernel_mode():
    """The `TSM_KERAS_SHIFT_KERNEL` mode, validated."""
    mode = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{KERNEL_ENV} must be one of {MODES}, got {os.environ[KERNEL_ENV]!r}")
    return mode


@contextlib.contextmanager
def portable(form="slices"):
    """Traces `TemporalShift` with builtin operations, not the native kernel, while the block runs.

    Args:
        form: `"slices"`: slicing, zero padding and one concatenation (what
            every backend runs without the kernel); `"depthwise"`: one
            depthwise convolution over time with fixed 0/1 taps (frames of
            static shape; the other frames take the slices), which LiteRT
            runs faster. The innermost block's form applies.

    Example:

    >>> with portable():
    ...     model.export("saved_model_dir")  # no TsmTemporalShift in the graph
    """
    if form not in PORTABLE_FORMS:
        raise ValueError(f"form must be one of {PORTABLE_FORMS}, got {form!r}")
    _portable_forms.append(form)
    try:
        yield
    finally:
        _portable_forms.pop()


def portable_form():
    """The form chosen by the innermost open `portable()` block; `None` outside them."""
    return _portable_forms[-1] if _portable_forms else None


def cache_dir():
    """Where built kernels are kept: `$TSM_KERAS_CACHE/kernels` or `~/.cache/tsm_keras/kernels`."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tsm_keras"
    )
    return Path(root) / "kernels"


def default_compiler():
    """The C++ compiler `build` uses unless told otherwise: `$CXX`, else `g++`."""
    return os.environ.get("CXX") or "g++"


def build_flags():
    """Compiler flags for a TensorFlow custom-op library of the installed TensorFlow."""
    import tensorflow as tf

    return ["-O3", "-w", "-shared", "-fPIC", *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def build(directory=None, compiler=None):
    """Compiles `kernels/temporal_shift.cc` unless the cache has it; returns the library's path.

    Args:
        directory: where to keep the library (default: `cache_dir()`).
        compiler: the C++ compiler (default: `$CXX`, else `g++`).

    Raises:
        ShiftKernelBuildError: no compiler, or the compiler failed (its output
            is in the message).
    """
    import tensorflow as tf

    compiler = compiler or default_compiler()
    executable = shutil.which(compiler)
    if executable is None:
        raise ShiftKernelBuildError(f"no C++ compiler: {compiler!r} is not on PATH (set CXX to use another)")
    flags = build_flags()
    digest = hashlib.sha256("\0".join([SOURCE.read_text(), executable, *flags]).encode()).hexdigest()[:16]
    directory = Path(directory) if directory is not None else cache_dir()
    library = directory / f"temporal_shift-tf{tf.__version__}-{digest}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    # Built under a private name and renamed: processes building at once each
    # install a complete library.
    partial = library.with_name(f"{library.name}.{os.getpid()}.partial")
    command = [executable, str(SOURCE), "-o", str(partial), *flags]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise ShiftKernelBuildError(f"{compiler} took over {BUILD_TIMEOUT_SECONDS} s on {SOURCE}") from error
    if result.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise ShiftKernelBuildError(f"{compiler} failed on {SOURCE} (exit {result.returncode}):\n{output}")
    os.replace(partial, library)
    return library


@functools.cache
def load():
    """The loaded kernel module (`.tsm_temporal_shift`), or None where it cannot be built.

    Built once per process; registers the gradient (the opposite shift).

    Raises:
        ShiftKernelBuildError: in `native` mode, if the build or load fails.
    """
    import tensorflow as tf

    try:
        module = tf.load_op_library(str(build()))
    except (ShiftKernelBuildError, tf.errors.OpError, OSError) as error:
        if kernel_mode() == "native":
            raise error if isinstance(error, ShiftKernelBuildError) else ShiftKernelBuildError(str(error))
        warnings.warn(
            f"tsm_keras: the native temporal-shift kernel is unavailable ({error}); TemporalShift uses its "
            f"portable form, slower on a CPU. Set {KERNEL_ENV}=portable to choose it without this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None

    _register_gradient(module)
    return module


def _register_gradient(module):
    """Registers the gradient of `TsmTemporalShift`, once per process: the opposite shift."""
    global _gradient_registered
    if _gradient_registered:
        return
    import tensorflow as tf

    @tf.RegisterGradient("TsmTemporalShift")
    def _opposite_shift(op, upstream):
        return module.tsm_temporal_shift(
            upstream,
            num_segments=op.get_attr("num_segments"),
            fold=op.get_attr("fold"),
            offsets=[-offset for offset in op.get_attr("offsets")],
        )

    _gradient_registered = True


@functools.cache
def _cpu_only():
    import tensorflow as tf

    return all(device.device_type == "CPU" for device in tf.config.list_logical_devices())


def usable(frames):
    """Whether `TemporalShift` should shift `frames` with the native kernel here."""
    if _portable_forms or keras.backend.backend() != "tensorflow":
        return False
    if kernel_mode() == "portable" or keras.backend.standardize_dtype(frames.dtype) not in SUPPORTED_DTYPES:
        return False
    return len(frames.shape) >= 2 and _cpu_only() and load() is not None


def shift(frames, num_segments, fold, offsets):
    """Channel group `g` (`fold` channels) of `(N * T, ..., C)` frames takes frame `t + offsets[g]`."""
    return load().tsm_temporal_shift(frames, num_segments=num_segments, fold=fold, offsets=list(offsets))
