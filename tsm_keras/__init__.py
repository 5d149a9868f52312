"""tsm_keras: the Temporal Shift Module (Lin, Gan, Han, ICCV 2019) in Keras 3."""

__version__ = "0.1.0"

from tsm_keras.layers import MergeSegments, NonLocal, SegmentConsensus, TemporalPool, TemporalShift
from tsm_keras.models import TSM, OnlineTSM, TSMSpec, build_online, build_tsm, model_complexity
from tsm_keras.models.reparameterize import reparameterize
from tsm_keras.convert import import_torch_checkpoint, load_torch_checkpoint
from tsm_keras.presets import from_preset, get_preset, list_presets
