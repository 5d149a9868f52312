"""Structural reparameterization: a train-time TSM -> its deploy form, for inference.

Every backbone declares its deploy form in its `BackboneSpec`:
`deploy_options` (the `backbone_options` that build it, `{"deploy": True}`)
and `fuse` (the deploy-layer weights computed from the train-time layers).

- ResNet and MobileNetV2: every BatchNormalization is folded into the conv
  before it (`tsm_keras.models.backbones.folding.fold_conv_batch_norms`). In
  TensorFlow the residual add and ReLU then fuse into the block's last conv.
- MobileOne: each train-time MobileOneBlock computes, before its SE and ReLU,

    sum_k BN_k(conv_k(x)) + BN_s(conv1x1(x)) + BN_id(x)

  which is linear in `x` in inference mode, so it equals one kxk conv with a
  bias (`tsm_keras.models.backbones.folding`): the 1x1 kernel is zero-padded
  to kxk (its tap at the centre), and kernels and biases of all branches add up.

The deploy form is for inference: it has no BatchNormalization left to train.
"""

from tsm_keras.models.backbones import BACKBONES, get_backbone
from tsm_keras.models.precision import dtype_policy_scope
from tsm_keras.models.tsm import TSM


def reparameterize(model):
    """The deploy-time twin of a train-time TSM, with equal logits.

    Builds the same TSM with the backbone's deploy options (so it saves and
    loads like any TSM), fills every deploy layer the backbone fuses (a
    conv with its BatchNormalization folded in, a MobileOneBlock's
    `_reparam_conv`) and copies every other weight (SE, Non-local,
    classifier) by layer name. In inference mode both models give the same
    logits up to float32 rounding.

    Args:
        model: a `TSM` built in its train-time form (the default).

    Returns:
        A new `TSM`; `model` is left unchanged.

    Example:

    >>> train = build_tsm("resnet50", 400, num_segments=8, layout="torch")
    >>> deploy = reparameterize(train)
    >>> deploy.backbone_options
    {'deploy': True}
    >>> any(isinstance(layer, keras.layers.BatchNormalization) for layer in deploy.layers)
    False
    """
    spec = get_backbone(model.backbone) if isinstance(model, TSM) else None
    if spec is None or spec.fuse is None:
        foldable = sorted(name for name, candidate in BACKBONES.items() if candidate.fuse)
        raise ValueError(
            "reparameterize needs a TSM on a backbone with a deploy form "
            f"({', '.join(foldable)}), got {type(model).__name__} "
            f"{getattr(model, 'backbone', None)!r}"
        )
    deploy_options = dict(spec.deploy_options)
    if is_deploy_form(model):
        raise ValueError(
            f"model {model.name!r} is already reparameterized ({deploy_options})"
        )
    config = model.get_config()
    config["backbone_options"] = {**model.backbone_options, **deploy_options}
    # The deploy form computes in the model's dtype (float32, bfloat16, float64, ...).
    policy = next(layer for layer in model.layers if layer.weights).dtype_policy
    with dtype_policy_scope(policy):
        deploy = TSM.from_config(config)
    train_layers = {layer.name: layer for layer in model.layers}
    fused = spec.fuse(train_layers)
    for layer in deploy.layers:
        if not layer.weights:
            continue
        if layer.name in fused:
            kernel, bias = fused[layer.name]
            dtype = layer.weights[0].dtype
            layer.set_weights([kernel.astype(dtype), bias.astype(dtype)])
        elif layer.name in train_layers:
            layer.set_weights(train_layers[layer.name].get_weights())
        else:
            raise ValueError(f"deploy layer {layer.name!r} has no source in model {model.name!r}")
    return deploy


def is_deploy_form(model):
    """Whether the TSM `model` was built in its backbone's deploy form."""
    deploy_options = get_backbone(model.backbone).deploy_options
    return all(model.backbone_options.get(key) == value for key, value in deploy_options.items())


def inference_form(model):
    """`model` as the test protocol and `tsm-predict` run it: its deploy form.

    `reparameterize(model)`, or `model` itself when it is already in its
    deploy form. Both compute the same logits up to float32 rounding; the
    deploy form is faster (no normalization pass; TensorFlow fuses a
    residual block's last conv with its add and ReLU).
    """
    return model if is_deploy_form(model) else reparameterize(model)
