"""Export of TSM models: the online per-frame model and LiteRT conversion.

- `build_online(model)` -> `OnlineTSM` (per-frame, explicit states), re-exported
  from `tsm_keras.models.online`, where it lives beside the offline model.
- `tflite`: `convert_offline`, `convert_online` (builtin ops only; fp32, fp16,
  dynamic, int8), `float_islands`.
- `flatbuffer`: op lists, signature tensors, state quantization checks.
- `calibration`: representative datasets for int8 (frame by frame online).
- `metadata`: the `FILE.tflite.json` sidecar the runners read.
- `exporter`: `export_tflite(model, out, mode, quant, ...)`, what
  `tsm-export` runs.
- `runtime`: `LiteRTModel`, an ai-edge-litert model called by signature names;
  `KerasOnlineRunner`; `stream_frames`, the one frame-by-frame loop over an
  online model (`step(frame, states)` on both runners).
- `check`: how close a LiteRT model is to its Keras TSM (`tsm-export --check`).
"""

from tsm_keras.models.online import (
    OnlineContext,
    OnlineTSM,
    OnlineTemporalShift,
    build_online,
    state_name,
)
from tsm_keras.export.tflite import (
    IO_TYPES,
    QUANT_MODES,
    FloatIslandsError,
    UnsupportedOpsError,
    convert_offline,
    convert_online,
    float_islands,
)
from tsm_keras.export.metadata import ModelMetadata, load_metadata, save_metadata
from tsm_keras.export.exporter import export_tflite
from tsm_keras.export.runtime import LiteRTModel
