"""What the trainer and the test protocol share: work-dir file names, the config's model, class names.

`trainer` (training) and `testing` (the test protocol) both import from
here, so neither imports the other.
"""

import keras

from tsm_keras.data.sources import class_names as data_class_names
from tsm_keras.models import TSM, load_weights

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"
FINAL_WEIGHTS = "final.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
# Deployable copies of the same two states: the whole model (architecture + weights, no optimizer)
# for `keras.saving.load_model`, `convert/to_tflite.py` and `tsm_keras.inference.predict`.
FINAL_MODEL = "model.keras"
BEST_MODEL = "best.keras"
BEST_INFO = "best.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
TEST_DIR = "test"


def freeze_partial_bn(model):
    """Partial BN: every BatchNorm of the network but the first runs in inference mode.

    Their statistics and affine parameters stay as initialised (ImageNet),
    as in TSN/TSM `partialBN`; returns the names of the frozen layers.
    Non-local blocks keep their own BatchNorm trainable (it is not a
    BatchNorm2d of the backbone in MMAction2 either).
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms[1:]:
        layer.trainable = False
    return [layer.name for layer in norms[1:]]


def build_model(config, input_size=None):
    """The config's TSM; `input_size` overrides the frame size (test views)."""
    model = TSM(config.model_spec(input_size))
    if config.model.weights is not None:
        load_weights(model, config.model.weights)
    if config.model.partial_bn:
        freeze_partial_bn(model)
    return model


def class_names(config):
    """The class names of the config's data, when they match `model.num_classes` (else None)."""
    names = data_class_names(config.data)
    return list(names) if names is not None and len(names) == config.model.num_classes else None


def time_reversed_pairs(config):
    """Label pairs of the synthetic dataset (`2k`, `2k+1` play backwards)."""
    if config.data.source != "synthetic":
        return None
    return [(label, label + 1) for label in range(0, config.model.num_classes, 2)]
