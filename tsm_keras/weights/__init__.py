"""Import of PyTorch TSM checkpoints (MMAction2, mit-han-lab, torchvision) into Keras.

Reading never executes code from the file (`torch_reader`), and PyTorch is not
needed. See `importer` for what is inferred from the keys and `key_maps` for
where each Keras weight lives in each checkpoint family.
"""

from tsm_keras.weights.checkpoint import TorchCheckpoint, UnsafeCheckpointError, read_checkpoint
from tsm_keras.weights.importer import (
    CheckpointMismatchError,
    ImportedCheckpoint,
    import_torch_checkpoint,
    load_torch_backbone_weights,
    load_torch_checkpoint,
)
from tsm_keras.weights.key_maps import SCHEMES, SOURCES, KeyScheme, UnsupportedArchitectureError
from tsm_keras.weights.torch_reader import CheckpointFormatError, TorchTensor, read_torch_file
