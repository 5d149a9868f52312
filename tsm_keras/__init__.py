"""tsm_keras: the Temporal Shift Module (Lin, Gan, Han, ICCV 2019) in Keras 3.

Importing the package is cheap: it does not import Keras or TensorFlow
(the command-line tools answer `--help` before either loads). The public API
below is resolved on first use (PEP 562), and the Keras serializables (the
layers, `TSM`, `OnlineTSM`) are registered as soon as Keras
is loaded, whichever comes first:

>>> import tsm_keras
>>> import keras
>>> model = keras.saving.load_model("tsm.keras")  # safe mode finds the TSM classes
"""

import importlib
import importlib.abc
import sys

__version__ = "0.1.0"

# Public name -> module that defines it.
_PUBLIC_API = {
    "MergeSegments": "tsm_keras.layers",
    "NonLocal": "tsm_keras.layers",
    "SegmentConsensus": "tsm_keras.layers",
    "TemporalPool": "tsm_keras.layers",
    "TemporalShift": "tsm_keras.layers",
    "TSM": "tsm_keras.models",
    "build_tsm": "tsm_keras.models",
    "model_complexity": "tsm_keras.models",
    "TSMSpec": "tsm_keras.models",
    "OnlineTSM": "tsm_keras.models",
    "build_online": "tsm_keras.models",
    "reparameterize": "tsm_keras.models.reparameterize",
    "import_torch_checkpoint": "tsm_keras.convert",
    "load_torch_checkpoint": "tsm_keras.convert",
    "from_preset": "tsm_keras.presets",
    "get_preset": "tsm_keras.presets",
    "list_presets": "tsm_keras.presets",
}

# Modules whose import registers the Keras serializables of a saved model
# (`register_keras_serializable`; the training optimizer and schedule register
# when `tsm_keras.training` is imported, which training code does anyway).
_SERIALIZABLE_MODULES = (
    "tsm_keras.layers",
    "tsm_keras.models",
    "tsm_keras.models.online",
)


def register_serializables():
    """Imports every module that registers Keras serializables (idempotent).

    Keras' safe-mode loader only imports modules of Keras' own packages, so
    a saved TSM loads only once these have run. Done automatically when
    Keras is imported after `import tsm_keras`, or on first use of the API.
    """
    for name in _SERIALIZABLE_MODULES:
        importlib.import_module(name)
    _RegisterWhenKerasLoads.uninstall()


def _initializing(module):
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Registers the serializables once Keras is loaded and no import is half done.

    It watches Keras, TensorFlow and the tsm_keras modules: TensorFlow
    imports Keras while it initialises and Keras imports TensorFlow, and a
    tsm_keras module that imports Keras cannot have the rest of the package
    imported from its middle (circular), so the registration runs when the
    last of these imports completes.
    """

    WATCHED = ("keras", "tensorflow")

    @classmethod
    def _watched(cls, name):
        return name in cls.WATCHED or name.startswith("tsm_keras.")

    def find_spec(self, fullname, path=None, target=None):
        if not self._watched(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self._ready(exclude=fullname):
                register_serializables()

        loader.exec_module = exec_then_register
        return spec

    @staticmethod
    def _ready(exclude):
        if "keras" not in sys.modules:
            return False
        for name, module in list(sys.modules.items()):
            if name == exclude:
                continue
            if _RegisterWhenKerasLoads._watched(name) and _initializing(module):
                return False
        return True

    @classmethod
    def install(cls):
        if not any(isinstance(finder, cls) for finder in sys.meta_path):
            sys.meta_path.insert(0, cls())

    @classmethod
    def uninstall(cls):
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, cls)]


if "keras" in sys.modules and not _initializing(sys.modules["keras"]):
    register_serializables()
else:
    _RegisterWhenKerasLoads.install()


def __getattr__(name):
    if name not in _PUBLIC_API:
        raise AttributeError(f"module 'tsm_keras' has no attribute {name!r}")
    register_serializables()
    value = getattr(importlib.import_module(_PUBLIC_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC_API))
