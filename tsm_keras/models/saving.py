"""Loading a saved `.keras` TSM, with a one-line error for any file that is not one."""

import os


class ModelFileError(ValueError):
    """A `.keras` file that cannot be loaded as a tsm_keras TSM (the message is one line)."""


def load_tsm(path, compile=False):
    """Loads a TSM saved with `model.save(...)`, in Keras safe mode.

    Safe mode never runs code from the file: a `.keras` holding a Python
    function (a `Lambda` layer) is refused, like a damaged file or a model
    that is not a TSM, with a `ModelFileError` naming the file and the reason.

    Args:
        path: the `.keras` file.
        compile: passed to `keras.saving.load_model`.

    Returns:
        The `TSM`.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: the file cannot be loaded as a TSM.

    Example:

    >>> model = load_tsm("tsm_r50.keras")
    >>> model.num_segments
    8
    """
    import keras

    import tsm_keras  # noqa: F401  (registers the TSM classes for loading)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:
        text = " ".join(str(error).split())
        if "safe_mode" in text:
            reason = "it holds Python code (e.g. a Lambda layer), which Keras safe mode refuses to load (nothing was run)"
        else:
            reason = f"{type(error).__name__}: {text[:300]}"
        raise ModelFileError(f"{path}: cannot be loaded as a Keras model: {reason}") from None
    if not hasattr(model, "tsm_config"):
        raise ModelFileError(f"{path}: not a tsm_keras TSM (got {type(model).__name__})")
    return model
