"""Export of TSM models: the online per-frame model and LiteRT conversion."""

from tsm_keras.export.online import (
    OnlineContext,
    OnlineTSM,
    OnlineTemporalShift,
    build_online,
    state_name,
)
