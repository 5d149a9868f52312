"""TSM models (offline `TSM` and per-frame `OnlineTSM`, one `TSMSpec`), their backbones and their complexity."""

from tsm_keras.models.backbones import BACKBONES, BackboneSpec, get_backbone
from tsm_keras.models.spec import DIRECTIONS, LAYOUTS, NON_LOCAL_MODES, TSMSpec
from tsm_keras.models.head import classifier_head
from tsm_keras.models.complexity import count_params, model_complexity
from tsm_keras.models.temporal import SHIFT_PLACES, TemporalContext
from tsm_keras.models.torch_weights import load_torch_backbone_weights
from tsm_keras.models.tsm import TSM, build_tsm, load_keras_applications_weights, load_weights
from tsm_keras.models.online import OnlineContext, OnlineTSM, OnlineTemporalShift, build_online, state_name
from tsm_keras.models.saving import ModelFileError, load_tsm
