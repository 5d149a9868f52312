"""Published TSM checkpoints as named presets (the keras-hub `from_preset` convention).

`from_preset(name)` downloads a checkpoint of MMAction2's TSM model zoo (or the
authors' online Jester model) with `keras.utils.get_file` into the Keras cache,
checks its SHA-256, imports it once with `tsm_keras.convert.import_torch_checkpoint`
(strict: every tensor used once, every weight filled), saves the Keras model next
to the checkpoint and loads that `.keras` file on every later call.

Each `Preset` carries what a user of the checkpoint needs besides the weights: its
architecture as a `TSMSpec` (layout `"torch"`; among it the settings the file cannot
tell: clip length, Non-local mode, MobileOne `shift_segments`), the label map, the
input normalisation and the test protocol of the published accuracy.

Names are MMAction2's config names; each also has a short alias
(`tsm_r50_1x1x8_k400`, ...). `list_presets()` gives every name and alias.
URLs, stamps and the hash convention: docs/reference.md#model-zoo; the test
views: docs/reference.md#test-protocols.

Example:

>>> import tsm_keras
>>> model = tsm_keras.from_preset("tsm_r50_1x1x8_k400")   # ~100 MB, once
>>> tsm_keras.get_preset("tsm_r50_1x1x8_k400").class_names()[:2]
['abseiling', 'air drumming']
"""

import dataclasses
import hashlib
import os
from typing import Optional

import keras

from tsm_keras.data.annotations import load_label_map
from tsm_keras.data.config import IMAGENET_MEAN, IMAGENET_STD
from tsm_keras.models.spec import TSMSpec
from tsm_keras.models.tsm import register_preset_loader
from tsm_keras.convert import import_torch_checkpoint

# Under the Keras cache (`$KERAS_HOME`, default `~/.keras`): checkpoints and their imported models.
CACHE_SUBDIR = os.path.join("models", "tsm_keras")
MMACTION2_ZOO = "https://download.openmmlab.com/mmaction/v1.0/recognition/tsm"
MIT_ZOO = "https://hanlab18.mit.edu/projects/tsm/models"
# On 0..255 RGB, for every preset (MMAction2's data preprocessor; mit-han-lab's
# [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225] on 0..1 are the same numbers).
IMAGENET_NORMALIZATION = {"mean": tuple(IMAGENET_MEAN), "std": tuple(IMAGENET_STD)}


class PresetError(RuntimeError):
    """A preset cannot be provided: unknown name, no download, wrong file."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One published checkpoint and how to use it.

    Args:
        name: MMAction2 config name (or the authors' file name).
        alias: short name, `tsm_<backbone>_<sampling>_<dataset>`.
        url: where the PyTorch checkpoint is published.
        sha256: expected first hex digits of the file's SHA-256 (MMAction2
            puts the first 8 in its file names), or None when the publisher
            gives none.
        spec: the architecture, a `TSMSpec` of layout `"torch"` whose
            `input_shape` is the frame size the network was trained at
            (MobileOne-S4 1x1x16: `backbone_options={"shift_segments": 8}`,
            the clip length its shifts were trained with).
        label_map: shipped label map name (`tsm_keras.data.load_label_map`).
        test_protocol: the published accuracy's test views, as config
            sections (`{"data": {...}, "test": {...}}`, usable with `--set`).
        top1: published top-1 (%) under `test_protocol`.
        normalization: `{"mean", "std"}` on 0..255 RGB.

    Example:

    >>> preset = get_preset("tsm_mobileone_s4_1x1x16_k400")
    >>> preset.spec.backbone_options
    {'shift_segments': 8}
    """

    name: str
    alias: str
    url: str
    sha256: Optional[str]
    spec: TSMSpec
    label_map: str
    test_protocol: dict
    top1: float
    normalization: dict = dataclasses.field(default_factory=lambda: dict(IMAGENET_NORMALIZATION))

    @property
    def file_name(self):
        return os.path.basename(self.url)

    def class_names(self):
        """The label names, in class order."""
        return load_label_map(self.label_map)

    def spec_for(self, input_shape=None):
        """The preset's `TSMSpec` for frames of `input_shape` (default: the training size)."""
        return self.spec if input_shape is None else self.spec.replace(input_shape=tuple(input_shape))

    def import_kwargs(self, input_shape=None):
        """`import_torch_checkpoint` arguments: the settings the file cannot tell."""
        spec = self.spec_for(input_shape)
        told = ("num_segments", "shift_div", "direction", "non_local", "input_shape")
        return {"arch": spec.backbone, "shift_segments": spec.backbone_options.get("shift_segments"),
                **{key: getattr(spec, key) for key in told}}


def _protocol(clips, crop, crop_size, average="prob", **data):
    """Test views as config sections; `clips` > 1 on a non-dense row means twice sampling."""
    data = {"resize_short": 256, "test_crop": crop, "test_crop_size": crop_size, **data}
    if clips == 2:
        data["twice_sample"] = True
    return {"data": data, "test": {"average": average}}


_TEN_CROP = _protocol(1, "ten", 224)
_THREE_CROP = _protocol(1, "three", 256)
_SSV2 = _protocol(2, "three", 256)


def _mmaction2(config, stamp, alias, top1, dataset, protocol, **architecture):
    num_classes, label_map = {"k400": (400, "kinetics400"), "sthv2": (174, "sthv2")}[dataset]
    return Preset(
        name=config,
        alias=alias,
        url=f"{MMACTION2_ZOO}/{config}/{config}_{stamp}.pth",
        sha256=stamp.rsplit("-", 1)[1],
        label_map=label_map,
        spec=TSMSpec(num_classes=num_classes, layout="torch", **architecture),
        test_protocol=protocol,
        top1=top1,
    )


_PRESETS = (
    _mmaction2("tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb", "20220831-64d69186",
               "tsm_r50_1x1x8_k400", 73.18, "k400", _TEN_CROP, backbone="resnet50"),
    _mmaction2("tsm_imagenet-pretrained-r50_8xb16-1x1x8-100e_kinetics400-rgb", "20220831-a6db1e5d",
               "tsm_r50_1x1x8_100e_k400", 73.22, "k400", _TEN_CROP, backbone="resnet50"),
    _mmaction2("tsm_imagenet-pretrained-r50_8xb16-1x1x16-50e_kinetics400-rgb", "20220831-042b1748",
               "tsm_r50_1x1x16_k400", 75.12, "k400", _protocol(1, "ten", 224, num_clips=16),
               backbone="resnet50", num_segments=16),
    _mmaction2("tsm_imagenet-pretrained-r50_8xb16-dense-1x1x8-50e_kinetics400-rgb", "20220831-f55d3c2b",
               "tsm_r50_dense_1x1x8_k400", 73.38, "k400",
               _protocol(10, "ten", 224, dense=True, dense_sample_range=64, dense_test_clips=10),
               backbone="resnet50"),
    _mmaction2("tsm_imagenet-pretrained-r50-nl-embedded-gaussian_8xb16-1x1x8-50e_kinetics400-rgb",
               "20220831-35eddb57", "tsm_r50_nl_embedded_gaussian_1x1x8_k400", 74.34, "k400", _TEN_CROP,
               backbone="resnet50", non_local="embedded_gaussian"),
    _mmaction2("tsm_imagenet-pretrained-r50-nl-dot-product_8xb16-1x1x8-50e_kinetics400-rgb",
               "20220831-108bfde5", "tsm_r50_nl_dot_product_1x1x8_k400", 74.49, "k400", _TEN_CROP,
               backbone="resnet50", non_local="dot_product"),
    _mmaction2("tsm_imagenet-pretrained-r50-nl-gaussian_8xb16-1x1x8-50e_kinetics400-rgb",
               "20220831-7e54dacf", "tsm_r50_nl_gaussian_1x1x8_k400", 73.66, "k400", _TEN_CROP,
               backbone="resnet50", non_local="gaussian"),
    _mmaction2("tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb", "20230414-401127fd",
               "tsm_mobilenetv2_1x1x8_k400", 68.71, "k400", _THREE_CROP, backbone="mobilenet_v2"),
    # MMAction2 builds this backbone for 8 segments and feeds it 16 frames: its shifts treat each
    # clip as two halves of 8. The checkpoint's meta config says so, a bare copy does not.
    _mmaction2("tsm_imagenet-pretrained-mobileone-s4_8xb16-1x1x16-50e_kinetics400-rgb", "20230825-a7f8876b",
               "tsm_mobileone_s4_1x1x16_k400", 74.38, "k400", _protocol(1, "three", 256, num_clips=16),
               backbone="mobileone_s4", num_segments=16, shift_place="block",
               backbone_options={"shift_segments": 8}),
    _mmaction2("tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb", "20230317-be0fc26e",
               "tsm_r50_1x1x8_sthv2", 62.72, "sthv2", _SSV2, backbone="resnet50"),
    _mmaction2("tsm_imagenet-pretrained-r50_8xb16-1x1x16-50e_sthv2-rgb", "20230317-ec6696ad",
               "tsm_r50_1x1x16_sthv2", 64.16, "sthv2", _protocol(2, "three", 256, num_clips=16),
               backbone="resnet50", num_segments=16),
    _mmaction2("tsm_imagenet-pretrained-r101_8xb16-1x1x8-50e_sthv2-rgb", "20230320-efcc0d1b",
               "tsm_r101_1x1x8_sthv2", 63.70, "sthv2", _SSV2, backbone="resnet101"),
    # The authors' online demo model: uni-directional MobileNetV2 on Jester, published without a
    # hash (pin one with `sha256=`). Logits are averaged over the views, as in their code.
    Preset(
        name="mobilenetv2_jester_online",
        alias="tsm_mobilenetv2_online_jester",
        url=f"{MIT_ZOO}/mobilenetv2_jester_online.pth.tar",
        sha256=None,
        spec=TSMSpec(backbone="mobilenet_v2", num_classes=27, direction="unidirectional", layout="torch"),
        label_map="jester",
        test_protocol=_protocol(1, "center", 224, average="logit"),
        top1=None,
    ),
)
PRESETS = {preset.name: preset for preset in _PRESETS}
ALIASES = {preset.alias: preset.name for preset in _PRESETS}


def list_presets():
    """Every preset name and alias, sorted (aliases resolve to the same preset)."""
    return sorted([*PRESETS, *ALIASES])


def get_preset(name):
    """The `Preset` of a name or an alias."""
    preset = PRESETS.get(ALIASES.get(name, name))
    if preset is None:
        raise PresetError(f"unknown preset {name!r}; tsm_keras.list_presets() lists the "
                          f"{len(PRESETS)} presets and their aliases")
    return preset


def keras_cache_root(cache_root=None):
    """`cache_root`, else the Keras cache (`$KERAS_HOME`, default `~/.keras`)."""
    root = cache_root or os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return os.path.expanduser(os.fspath(root))


def cache_dir(cache_root=None):
    """The directory of downloaded checkpoints and their `.keras` models."""
    return os.path.join(keras_cache_root(cache_root), CACHE_SUBDIR)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path, expected):
    """Raises `PresetError` unless the SHA-256 of `path` starts with `expected` (None: no check)."""
    if expected is None:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise PresetError(f"{path}: SHA-256 {actual[:len(expected)]}... does not match the expected "
                          f"{expected}...; the file is not the published checkpoint")


def fetch_checkpoint(preset, checkpoint=None, cache_root=None):
    """The verified local checkpoint file of `preset`.

    `checkpoint` is a copy obtained by hand; otherwise the file is downloaded
    into `cache_dir()` (or taken from there when already present). A download
    that fails raises `PresetError` with one line naming the URL and where to
    put the file by hand; a file with the wrong hash is refused (and a
    downloaded one removed).
    """
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise PresetError(f"{checkpoint}: no such checkpoint file (preset {preset.name})")
        verify_sha256(checkpoint, preset.sha256)
        return os.fspath(checkpoint)
    target = os.path.join(cache_dir(cache_root), preset.file_name)
    # get_file falls back to /tmp/.keras when its cache dir is not (yet) writable: create it.
    os.makedirs(cache_dir(cache_root), exist_ok=True)
    try:
        path = keras.utils.get_file(preset.file_name, preset.url, cache_subdir=CACHE_SUBDIR,
                                    cache_dir=keras_cache_root(cache_root))
    except Exception as error:  # get_file raises a bare Exception for URL failures
        reason = " ".join(str(error).split())
        raise PresetError(
            f"preset {preset.name}: cannot download {preset.url} ({reason}); download it by hand and "
            f"pass it as checkpoint=PATH (--checkpoint PATH), or save it as {target}"
        ) from None
    try:
        verify_sha256(path, preset.sha256)
    except PresetError as error:
        os.remove(path)
        raise PresetError(f"{error} (removed from the cache)") from None
    return path


def from_preset(name, checkpoint=None, input_shape=None, cache_root=None):
    """The Keras TSM of a published checkpoint (see the module docstring).

    Args:
        name: a preset name or alias (`list_presets()`).
        checkpoint: a local copy of the checkpoint file (for machines
            without network); its hash is checked all the same.
        input_shape: `(H, W, 3)` frames (default: the preset's training size).
        cache_root: Keras cache root (default `$KERAS_HOME` or `~/.keras`).

    Returns:
        A `TSM` (layout `"torch"`) with the checkpoint's weights.

    Example:

    >>> model = from_preset("tsm_mobilenetv2_1x1x8_k400")
    >>> model.output_shape
    (None, 400)
    """
    preset = get_preset(name)
    shape = preset.spec_for(input_shape).input_shape
    model_path = os.path.join(cache_dir(cache_root), f"{preset.name}_{shape[0]}x{shape[1]}.keras")
    if os.path.isfile(model_path) and checkpoint is None:
        return keras.saving.load_model(model_path, compile=False)
    path = fetch_checkpoint(preset, checkpoint, cache_root)
    imported = import_torch_checkpoint(path, **preset.import_kwargs(shape))
    if imported.spec.num_classes != preset.spec.num_classes:
        raise PresetError(f"{path}: {imported.spec.num_classes} classes, preset {preset.name} "
                          f"expects {preset.spec.num_classes}")
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    temporary = f"{model_path[: -len('.keras')]}.tmp-{os.getpid()}.keras"
    imported.model.save(temporary)
    os.replace(temporary, model_path)
    return imported.model


register_preset_loader(from_preset)
