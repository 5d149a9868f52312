"""The TSM model: a 2D backbone with temporal shifts, a linear head and consensus."""

import keras

from tsm_keras.layers import MergeSegments, NonLocal, SegmentConsensus
from tsm_keras.models.backbones import get_backbone
from tsm_keras.models.temporal import TemporalContext
from tsm_keras.models.torch_weights import load_torch_backbone_weights

# `TSM.from_preset` delegates to the loader `tsm_keras.presets` registers on import: the presets
# need the checkpoint importer, which builds models, so this module cannot import them.
_preset_loader = None


def register_preset_loader(loader):
    """Sets the function behind `TSM.from_preset` (`tsm_keras.presets.from_preset`)."""
    global _preset_loader
    _preset_loader = loader


@keras.saving.register_keras_serializable(package="tsm_keras")
class TSM(keras.Model):
    """Temporal Shift Module network (Lin, Gan and Han, ICCV 2019).

    A functional Keras model that takes clips `(batch, T, H, W, 3)` (RGB,
    already normalised by the input pipeline) and returns class logits averaged
    over the frames: frames are folded into the batch, run through a 2D
    backbone whose blocks shift `1/shift_div` of their channels one frame
    forward and `1/shift_div` one frame backward, pooled, classified per frame
    (dropout + linear layer) and averaged over time (TSN consensus).

    Args:
        backbone: a name registered in `tsm_keras.models.backbones`
            (`"resnet50"`, `"resnet101"`, `"mobilenet_v2"`, `"mobileone_s4"`, ...).
        num_classes: int, size of the classifier.
        num_segments: int, frames per clip `T`.
        shift_div: int, `1 / shift_div` of the channels shift each way;
            `0` builds the TSN twin (same network, no shift).
        shift_place: `"blockres"` (shift inside the residual branch) or
            `"block"` (shift the block input).
        direction: `"bidirectional"` (offline) or `"unidirectional"` (online,
            causal; required by `tsm_keras.export.build_online`).
        non_local: None, `"dot_product"`, `"gaussian"` or `"embedded_gaussian"`
            (ResNet only: after layer2.{0,2} and layer3.{0,2,4}).
        temporal_pool: bool, max-pool time by 2 before stage 2 (ResNet only).
        layout: `"keras"` (keras.applications weights) or `"torch"` (PyTorch
            checkpoint layout).
        input_shape: `(H, W, 3)` of each frame.
        dropout: float, dropout rate before the classifier.
        bn_momentum: float, Keras BatchNorm momentum (0.9 equals PyTorch's 0.1;
            `keras.applications` uses 0.999, which lags in short trainings).
        init_std: float, std of the classifier's normal initialiser.
        backbone_options: dict of extra keyword arguments for the backbone.
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).

    Example:

    >>> model = TSM("mobilenet_v2", num_classes=10, num_segments=8,
    ...             input_shape=(112, 112, 3))
    >>> model(np.zeros((2, 8, 112, 112, 3), "float32")).shape
    (2, 10)
    """

    def __init__(
        self,
        backbone="resnet50",
        num_classes=400,
        num_segments=8,
        shift_div=8,
        shift_place="blockres",
        direction="bidirectional",
        non_local=None,
        temporal_pool=False,
        layout="keras",
        input_shape=(224, 224, 3),
        dropout=0.5,
        bn_momentum=0.9,
        init_std=0.001,
        backbone_options=None,
        **kwargs,
    ):
        spec = get_backbone(backbone)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        input_shape = tuple(int(dim) for dim in input_shape)
        context = TemporalContext(
            num_segments=num_segments,
            shift_div=shift_div,
            shift_place=shift_place,
            direction=direction,
            non_local_mode=non_local,
            use_temporal_pool=temporal_pool,
            bn_momentum=bn_momentum,
        )
        clips = keras.Input((int(num_segments),) + input_shape, name="clip")
        frames = MergeSegments(name="merge_segments")(clips)
        features, segments_after = spec.build(
            frames, context, layout=layout, **(backbone_options or {})
        )
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
        frame_logits = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=init_std),
            name="fc_cls",
        )(pooled)
        logits = SegmentConsensus(segments_after, name="consensus", dtype="float32")(
            frame_logits
        )
        kwargs.setdefault("name", f"tsm_{backbone}")
        super().__init__(inputs=clips, outputs=logits, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.num_segments = int(num_segments)
        self.shift_div = int(shift_div or 0)
        self.shift_place = shift_place
        self.direction = direction
        self.non_local = non_local
        self.temporal_pool = bool(temporal_pool)
        self.layout = layout
        self.frame_shape = input_shape
        self.dropout = float(dropout)
        self.bn_momentum = float(bn_momentum)
        self.init_std = float(init_std)
        self.backbone_options = dict(backbone_options or {})

    def tsm_config(self):
        """The architecture arguments (everything but Keras' own)."""
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "num_segments": self.num_segments,
            "shift_div": self.shift_div,
            "shift_place": self.shift_place,
            "direction": self.direction,
            "non_local": self.non_local,
            "temporal_pool": self.temporal_pool,
            "layout": self.layout,
            "input_shape": self.frame_shape,
            "dropout": self.dropout,
            "bn_momentum": self.bn_momentum,
            "init_std": self.init_std,
            "backbone_options": self.backbone_options,
        }

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.tsm_config()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)

    @classmethod
    def from_preset(cls, name, **kwargs):
        """The TSM of a published checkpoint: `tsm_keras.presets.from_preset(name, **kwargs)`.

        Example:

        >>> model = TSM.from_preset("tsm_r50_1x1x8_k400")
        """
        if _preset_loader is None:
            raise RuntimeError("no preset loader registered: import tsm_keras.presets first")
        return _preset_loader(name, **kwargs)


def build_tsm(
    backbone,
    num_classes,
    num_segments=8,
    shift_div=8,
    shift_place="blockres",
    direction="bidirectional",
    non_local=None,
    temporal_pool=False,
    layout="keras",
    weights=None,
    input_shape=(224, 224, 3),
    dropout=0.5,
    shift=True,
    **kwargs,
):
    """Builds a TSM (see `TSM` for the arguments) and optionally loads weights.

    Args:
        shift: bool, `False` is the same as `shift_div=0` (the TSN twin).
        weights: backbone initialisation. None (random); `"imagenet"` (Keras
            ImageNet weights, downloaded by `keras.applications`, layout
            `"keras"`); or a path to a weight file of the matching
            `keras.applications` network (`.h5` / `.weights.h5`, with or
            without its top); for layout `"torch"`, a PyTorch file (`.pth`,
            `.pt`, `.pth.tar`: torchvision ImageNet ResNet / MobileNetV2, or
            the backbone of an MMAction2 / mit-han-lab TSM checkpoint), read by
            `tsm_keras.models.torch_weights.load_torch_backbone_weights`. The classifier
            (and any Non-local block) keeps its initialisation. To restore a
            whole trained TSM use `model.load_weights(...)` or
            `keras.saving.load_model(...)`.
        **kwargs: further `TSM` arguments (`bn_momentum`, `init_std`, ...).

    Example:

    >>> model = build_tsm("resnet50", num_classes=400, num_segments=8)
    >>> model.output_shape
    (None, 400)
    """
    model = TSM(
        backbone=backbone,
        num_classes=num_classes,
        num_segments=num_segments,
        shift_div=shift_div if shift else 0,
        shift_place=shift_place,
        direction=direction,
        non_local=non_local,
        temporal_pool=temporal_pool,
        layout=layout,
        input_shape=input_shape,
        dropout=dropout,
        **kwargs,
    )
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model, weights):
    """Fills the backbone of `model` with ImageNet weights (see `build_tsm`)."""
    if model.layout == "keras":
        return load_keras_applications_weights(model, weights)
    if str(weights).endswith((".pth", ".pt", ".pth.tar")):
        return load_torch_backbone_weights(model, weights)
    raise ValueError(
        f"weights={weights!r} for layout='torch': PyTorch ImageNet weights are read by "
        "load_torch_backbone_weights from .pth / .pt / .pth.tar files"
    )


def load_keras_applications_weights(model, weights):
    """Copies `keras.applications` ImageNet weights into a `layout="keras"` TSM.

    `weights` is `"imagenet"` or a path to a weight file of the matching
    `keras.applications` network (with or without its top). Every backbone
    weight of the TSM must be filled; a mismatch raises `ValueError`.
    """
    spec = get_backbone(model.backbone)
    if model.layout != "keras" or spec.keras_application is None:
        raise ValueError(
            f"keras.applications weights need layout='keras' and a Keras backbone; "
            f"got backbone={model.backbone!r}, layout={model.layout!r}"
        )
    source = None
    for include_top in (False, True):
        try:
            source = spec.keras_application(
                include_top=include_top,
                weights=weights,
                input_shape=None if include_top else model.frame_shape,
            )
            break
        except ValueError:
            if include_top:
                raise
    targets = {layer.name: layer for layer in model.layers}
    filled = set()
    for layer in source.layers:
        ours = spec.keras_name(layer.name)
        if ours is None or not layer.weights:
            continue
        if ours not in targets:
            raise ValueError(f"keras.applications layer {layer.name!r} has no TSM layer {ours!r}")
        targets[ours].set_weights(layer.get_weights())
        filled.add(ours)
    # The classifier and Non-local blocks are new layers: they keep their init.
    missing = [
        layer.name
        for layer in model.layers
        if layer.weights
        and layer.name not in filled
        and layer.name != "fc_cls"
        and not isinstance(layer, NonLocal)
    ]
    if missing:
        raise ValueError(f"keras.applications weights left TSM layers unfilled: {missing}")
    return model
