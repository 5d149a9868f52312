"""The descriptor each backbone module exports: everything the project knows about one backbone.

A backbone module (`resnet.py`, `mobilenet_v2.py`, `mobileone.py`, ...) is
self-contained: it builds the 2D trunk in both weight layouts, says which
TSM options it supports, maps its Keras layers to the PyTorch module paths of
every checkpoint family it can be imported from, and recognises its own
checkpoints. The rest of the project (the `TSM`, the online model, the
checkpoint importer, the training config) asks the descriptor and never
tests a backbone's name.
"""

import dataclasses
from typing import Callable, Mapping, Optional


def _reads_nothing(body):
    return {}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One backbone: builder, capabilities, defaults and PyTorch key mapping.

    Args:
        name: registry name (`"resnet50"`, `"mobileone_s4"`, ...).
        builder: `(frames, context, layout, **options) -> (features,
            num_segments_after)`; `frames` is `(N*T, H, W, 3)`, `context` a
            `TemporalContext`, `num_segments_after` the clip length the
            features carry (halved by a temporal pool).
        layouts: the weight layouts it can be built in (`"keras"`, `"torch"`).
        shift_places: the shift placements it supports.
        supports_non_local: bool, Non-local blocks exist for it.
        supports_temporal_pool: bool, the temporal pool exists for it.
        default_num_segments: int, clip length of its reference recipes
            (used when a checkpoint does not say).
        options: names of the `backbone_options` it accepts.
        keras_application: `keras.applications` constructor whose ImageNet
            weights the `"keras"` layout accepts, or None.
        keras_name: maps a `keras.applications` layer name to ours (or None).
        torch_paths: `{checkpoint family: path_of}` with `path_of(layer name,
            structure) -> module path or None`, `structure` a
            `tsm_keras.weights.key_maps.ModelStructure`. Families absent
            here have no layout for this backbone.
        torchvision_head_keys: the ImageNet classifier keys of its
            torchvision file (read, not imported).
        recognizes: `(body) -> bool`, whether checkpoint tensors
            `{key without the family prefix: tensor}` hold this backbone.
        read_structure: `(body) -> dict` with what the keys say beyond the
            backbone: `shift_place`, `shifted`, `temporal_pool` and
            `backbone_options`.
        fuse: None, or `(layers by name) -> {deploy layer name: (kernel,
            bias)}` folding a train-time model into its deploy form
            (`tsm_keras.models.reparameterize`).
        deploy_options: `backbone_options` of the deploy form (with `fuse`).
        shift_place_reason: why only `shift_places` exist (for errors).

    Example:

    >>> spec = get_backbone("resnet50")
    >>> spec.supports_temporal_pool, spec.layouts
    (True, ('keras', 'torch'))
    >>> features, segments = spec.build(frames, TemporalContext(8), layout="torch")
    """

    name: str
    builder: Callable
    layouts: tuple = ("keras", "torch")
    shift_places: tuple = ("blockres", "block")
    supports_non_local: bool = False
    supports_temporal_pool: bool = False
    default_num_segments: int = 8
    options: tuple = ()
    keras_application: Optional[Callable] = None
    keras_name: Optional[Callable] = None
    torch_paths: Mapping = dataclasses.field(default_factory=dict)
    torchvision_head_keys: tuple = ()
    recognizes: Callable = lambda body: False
    read_structure: Callable = _reads_nothing
    fuse: Optional[Callable] = None
    deploy_options: Mapping = dataclasses.field(default_factory=dict)
    shift_place_reason: str = ""

    def build(self, frames, context, layout="keras", **options):
        """The trunk on `frames`: `(features, num_segments_after)`.

        Raises:
            ValueError: an option the backbone does not support (Non-local,
                temporal pool, shift placement, unknown backbone option).
        """
        self.check(context, layout, options)
        return self.builder(frames, context, layout=layout, **options)

    def check(self, context, layout, options=()):
        """Raises `ValueError` for TSM options this backbone does not have."""
        if layout not in self.layouts:
            raise ValueError(
                f"Backbone {self.name!r} supports layouts {self.layouts}, got {layout!r}"
            )
        unsupported = [
            name
            for name, used, supported in (
                ("temporal_pool", context.use_temporal_pool, self.supports_temporal_pool),
                ("non_local", context.non_local_mode is not None, self.supports_non_local),
            )
            if used and not supported
        ]
        if unsupported:
            raise ValueError(
                f"{' and '.join(unsupported)} not available for backbone {self.name!r} "
                "(MMAction2 and mit-han-lab define them for ResNet backbones only)"
            )
        if context.shifts and context.shift_place not in self.shift_places:
            allowed = " or ".join(f"shift_place={place!r}" for place in self.shift_places)
            raise ValueError(
                f"{self.name} supports {allowed} only{self.shift_place_reason}; "
                f"got shift_place={context.shift_place!r}"
            )
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"backbone_options {unknown} are not options of {self.name!r} "
                f"(it accepts {list(self.options)})"
            )
