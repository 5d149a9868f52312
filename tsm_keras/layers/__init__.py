"""Keras layers of the Temporal Shift Module."""

from tsm_keras.layers.batch_norm import FusedBatchNormalization
from tsm_keras.layers.non_local import NON_LOCAL_MODES, NonLocal
from tsm_keras.layers.padded_relu import PaddedReLU
from tsm_keras.layers.segments import MergeSegments, SegmentConsensus, TemporalPool
from tsm_keras.layers.temporal_shift import (
    BIDIRECTIONAL,
    DIRECTIONS,
    UNIDIRECTIONAL,
    TemporalShift,
    shift_fold,
)
