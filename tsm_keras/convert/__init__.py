"""Building Keras TSM models from PyTorch checkpoints (MMAction2, mit-han-lab, torchvision).

This package sits above `tsm_keras.models` (which it builds) and
`tsm_keras.weights` (which reads files and places tensors): `resolve` works
out the model a checkpoint holds and where each value came from,
`torch_checkpoint` builds it and assigns the weights.
"""

from tsm_keras.convert.resolve import ResolvedSpec, resolve_spec
from tsm_keras.convert.torch_checkpoint import (
    ImportedCheckpoint,
    import_torch_checkpoint,
    load_torch_checkpoint,
)
from tsm_keras.models.torch_weights import load_torch_backbone_weights
from tsm_keras.weights import (
    CheckpointFormatError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    UnsupportedArchitectureError,
)
