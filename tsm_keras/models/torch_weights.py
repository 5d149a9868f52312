"""PyTorch backbone weights (torchvision ImageNet files, TSM checkpoints) into a TSM."""

from tsm_keras.models.backbones import get_backbone
from tsm_keras.weights import (
    SCHEMES,
    assign_weights,
    classifier_path,
    infer_source,
    read_checkpoint,
)


def load_torch_backbone_weights(model, path, source="auto"):
    """Fills the backbone of a `layout="torch"` TSM from a PyTorch file.

    Meant for fine-tuning: torchvision ImageNet files of the backbone (their
    ImageNet classifier is not imported), or the backbone of an MMAction2 /
    mit-han-lab TSM checkpoint (its classifier is not imported). The TSM's
    classifier (and, for ImageNet files, its Non-local blocks) keep their
    initialisation; every other weight must be filled and every backbone
    tensor of the file used.

    Args:
        model: a `TSM` built with `layout="torch"`.
        path: the weight file.
        source: `"auto"` or a checkpoint family (see
            `tsm_keras.weights.SOURCES`).

    Returns:
        `model`.

    Example:

    >>> model = build_tsm("resnet50", num_classes=174, layout="torch",
    ...                   weights="resnet50-11ad3fa6.pth")
    """
    if getattr(model, "layout", None) != "torch":
        raise ValueError("PyTorch weights need a model built with layout='torch'")
    backbone = get_backbone(model.backbone)
    checkpoint = read_checkpoint(path)
    detected, prefix = infer_source(checkpoint.tensors)
    source = detected if source == "auto" else source
    scheme_class = SCHEMES[source]
    if source == "torchvision":
        scheme = scheme_class(prefix=prefix)
        ignore = backbone.torchvision_head_keys
    else:
        head = classifier_path(checkpoint.tensors, source, prefix)
        scheme = scheme_class(prefix=prefix, head=None)
        ignore = [key for key in checkpoint.tensors if key.startswith(head + ".")]
    assign_weights(model, checkpoint, scheme, backbone, ignore=ignore)
    return model
