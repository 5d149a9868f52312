"""The TSM model: a 2D backbone with temporal shifts, a linear head and consensus."""

import keras

from tsm_keras.layers import MergeSegments, NonLocal, SegmentConsensus
from tsm_keras.models.backbones import get_backbone
from tsm_keras.models.head import classifier_head
from tsm_keras.models.spec import TSMSpec
from tsm_keras.models.temporal import TemporalContext
from tsm_keras.models.torch_weights import load_torch_backbone_weights

# `TSM.from_preset` delegates to the loader `tsm_keras.presets` registers on import: the presets
# need the checkpoint importer, which builds models, so this module cannot import them.
_preset_loader = None


def register_preset_loader(loader):
    """Sets the function behind `TSM.from_preset` (`tsm_keras.presets.from_preset`)."""
    global _preset_loader
    _preset_loader = loader


# Read-only model attributes that mirror the spec (`frame_shape` is the spec's
# `input_shape`: keras.Model has an `input_shape` of its own).
SPEC_ATTRIBUTES = {name: name for name in TSMSpec.field_names() if name != "input_shape"}
SPEC_ATTRIBUTES["frame_shape"] = "input_shape"


def split_spec_arguments(spec, kwargs, default_name):
    """`(TSMSpec, keras.Model kwargs)` from `Model(spec)`, `Model(backbone, **fields)` or `Model(**fields)`."""
    fields = {name: kwargs.pop(name) for name in TSMSpec.field_names() if name in kwargs}
    if isinstance(spec, TSMSpec):
        if fields:
            raise ValueError(f"pass either a TSMSpec or its fields, not both (got {sorted(fields)} too)")
    else:
        if spec is not None:
            fields["backbone"] = spec
        spec = TSMSpec(**fields)
    kwargs.setdefault("name", default_name.format(backbone=spec.backbone))
    return spec, kwargs


def with_spec_attributes(model_class):
    """Adds the read-only `SPEC_ATTRIBUTES` properties (`model.backbone`, ...) to a model class."""
    for attribute, field in SPEC_ATTRIBUTES.items():
        setattr(model_class, attribute, property(lambda self, field=field: getattr(self.spec, field)))
    return model_class


@keras.saving.register_keras_serializable(package="tsm_keras")
@with_spec_attributes
class TSM(keras.Model):
    """Temporal Shift Module network (Lin, Gan and Han, ICCV 2019).

    A functional Keras model that takes clips `(batch, T, H, W, 3)` (RGB,
    already normalised by the input pipeline) and returns class logits averaged
    over the frames: frames are folded into the batch, run through a 2D
    backbone whose blocks shift `1/shift_div` of their channels one frame
    forward and `1/shift_div` one frame backward, pooled, classified per frame
    (dropout + linear layer) and averaged over time (TSN consensus).

    The architecture is a `TSMSpec` (see it for every field, its default and
    its allowed values): `TSM(spec)`, or the spec's fields as keyword
    arguments (`TSM(backbone="resnet50", num_classes=400)`, also the form of
    `get_config`, so `.keras` files of either form load). `model.spec` holds
    it; `model.backbone`, `model.num_segments`, ..., `model.frame_shape`
    (the spec's `input_shape`) read it.

    Args:
        spec: a `TSMSpec`, or a backbone name followed by the other fields
            as keywords.
        **kwargs: the `TSMSpec` fields (when `spec` is not one) and
            `keras.Model` arguments (`name`, `dtype`, ...).

    Example:

    >>> spec = TSMSpec(backbone="mobilenet_v2", num_classes=10, num_segments=8,
    ...                input_shape=(112, 112, 3))
    >>> model = TSM(spec)
    >>> model(np.zeros((2, 8, 112, 112, 3), "float32")).shape
    (2, 10)
    >>> TSM.from_config(model.get_config()).spec == spec
    True
    """

    def __init__(self, spec=None, **kwargs):
        spec, kwargs = split_spec_arguments(spec, kwargs, "tsm_{backbone}")
        context = TemporalContext(
            num_segments=spec.num_segments,
            shift_div=spec.shift_div,
            shift_place=spec.shift_place,
            direction=spec.direction,
            non_local_mode=spec.non_local,
            use_temporal_pool=spec.temporal_pool,
            bn_momentum=spec.bn_momentum,
        )
        clips = keras.Input((spec.num_segments,) + spec.input_shape, name="clip")
        frames = MergeSegments(name="merge_segments")(clips)
        features, segments_after = get_backbone(spec.backbone).build(
            frames, context, layout=spec.layout, **spec.backbone_options
        )
        frame_logits = classifier_head(features, spec)
        logits = SegmentConsensus(segments_after, name="consensus", dtype="float32")(
            frame_logits
        )
        super().__init__(inputs=clips, outputs=logits, **kwargs)
        self.spec = spec

    def tsm_config(self):
        """The architecture as a plain dict (`self.spec.to_dict()`)."""
        return self.spec.to_dict()

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.tsm_config()}

    @classmethod
    def from_config(cls, config):
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


def build_tsm(backbone, num_classes, weights=None, shift=True, **kwargs):
    """`TSM(TSMSpec(backbone=..., num_classes=..., **kwargs))`, optionally with weights.

    Args:
        backbone, num_classes: the first two `TSMSpec` fields.
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
        shift: bool, `False` is the same as `shift_div=0` (the TSN twin).
        **kwargs: the other `TSMSpec` fields (`num_segments`, `shift_div`,
            `input_shape`, ...) and `keras.Model` arguments (`name`).

    Example:

    >>> model = build_tsm("resnet50", num_classes=400, num_segments=8)
    >>> model.output_shape
    (None, 400)
    """
    if not shift:
        kwargs["shift_div"] = 0
    model = TSM(backbone=backbone, num_classes=num_classes, **kwargs)
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
