"""Reading PyTorch checkpoints and placing their tensors into Keras weights.

Reading never executes code from the file (`torch_reader`), and PyTorch is not
needed. `key_maps` knows where each Keras weight lives in each checkpoint
family (with the backbone's own paths from its `BackboneSpec`), `assign`
fills a model strictly. This package does not import `tsm_keras.models`:
building a model from a checkpoint is `tsm_keras.convert`.
"""

from tsm_keras.weights.assign import CheckpointMismatchError, assign_weights
from tsm_keras.weights.checkpoint import TorchCheckpoint, UnsafeCheckpointError, read_checkpoint
from tsm_keras.weights.key_maps import (
    SCHEMES,
    SOURCES,
    KeyScheme,
    UnsupportedArchitectureError,
    classifier_path,
    infer_source,
)
from tsm_keras.weights.torch_reader import CheckpointFormatError, TorchTensor, read_torch_file
