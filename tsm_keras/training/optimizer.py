"""SGD with the TSM parameter groups, for one device or many replicas.

The reference recipes (MMAction2 `TSMOptimWrapperConstructor`, mit-han-lab
`get_optim_policies`) give PyTorch's SGD four parameter groups:

| group                     | lr multiplier | weight decay |
|---------------------------|---------------|--------------|
| conv / linear weights     | 1             | yes          |
| conv / linear biases      | 2             | no           |
| BatchNorm gamma and beta  | 1             | no           |
| classifier weight         | 5             | yes          |
| classifier bias           | 10            | no           |

Keras optimizers have no parameter groups, so `GroupedSGD` keeps one
`(lr multiplier, decay)` pair per variable (looked up by variable path when it
is built) and applies PyTorch's update to each variable:

    g = grad + weight_decay * w        (only where decay is on: coupled L2)
    buf = momentum * buf + g
    w = w - lr * multiplier * buf      (nesterov: g + momentum * buf)

This is PyTorch's `torch.optim.SGD` step exactly (dampening 0), including
with a changing lr, which Keras' SGD (velocity = momentum * v - lr * g) only
matches at constant lr. Keras' own `weight_decay` is decoupled and cannot
be restricted to a subset in the reference's way, so it stays off.

Gradient clipping by global norm must see the gradient summed over all
replicas (the reference clips after DDP's all-reduce), but Keras clips
`apply()`'s input and all-reduces it afterwards, so under a distribution
strategy its `global_clipnorm` would clip each replica's partial gradient.
`GroupedSGD` therefore expects gradients that the training step has already
summed over replicas (`tsm_keras.training.trainer.make_train_step`) and does
not all-reduce them again. It clips them itself: the replicas hold identical
gradients, but a multi-threaded sum of squares can round differently on two
devices, and a one-ulp difference in the clip factor would let the replicas'
weights drift apart; the squared norm is therefore averaged over replicas
(one all-reduce of a scalar) so that every replica uses the same factor.
"""

import dataclasses

import keras
import tensorflow as tf
from keras import ops

CLASSIFIER_LAYER = "fc_cls"


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """How one variable is optimised: lr multiplier and whether it decays."""

    lr_mult: float = 1.0
    decay: bool = True


def reference_param_groups(
    model,
    classifier_weight_lr_mult=5.0,
    classifier_bias_lr_mult=10.0,
    bias_lr_mult=2.0,
    classifier_layer=CLASSIFIER_LAYER,
):
    """`{variable path: ParamGroup}` of the TSM reference recipe.

    Args:
        model: a built Keras model (its trainable variables are grouped).
        classifier_weight_lr_mult, classifier_bias_lr_mult, bias_lr_mult:
            the multipliers of the table in the module docstring.
        classifier_layer: name of the classification layer.

    Example:

    >>> groups = reference_param_groups(model)
    >>> groups["fc_cls/kernel"], groups["fc_cls/bias"]
    (ParamGroup(lr_mult=5.0, decay=True), ParamGroup(lr_mult=10.0, decay=False))
    """
    groups = {}
    for variable in model.trainable_variables:
        layer_path, _, name = variable.path.rpartition("/")
        is_classifier = layer_path.split("/")[0] == classifier_layer
        if name in ("gamma", "beta"):
            group = ParamGroup(1.0, decay=False)
        elif name == "bias":
            group = ParamGroup(classifier_bias_lr_mult if is_classifier else bias_lr_mult, decay=False)
        else:
            group = ParamGroup(classifier_weight_lr_mult if is_classifier else 1.0, decay=True)
        groups[variable.path] = group
    return groups


@keras.saving.register_keras_serializable(package="tsm_keras")
class GroupedSGD(keras.optimizers.Optimizer):
    """PyTorch SGD with per-variable lr multipliers and coupled L2 decay.

    Expects gradients already summed over replicas (see the module
    docstring); on one device that is simply the gradient.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: float in [0, 1).
        nesterov: bool.
        weight_decay: float, L2 coefficient added to the gradient of the
            variables whose group decays.
        param_groups: `{variable path: ParamGroup}`; variables not listed get
            `ParamGroup()` (lr x1, decay).
        global_clipnorm: float or None, clip the gradient to this global norm.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    Example:

    >>> optimizer = GroupedSGD(0.01, momentum=0.9, weight_decay=1e-4,
    ...                        param_groups=reference_param_groups(model),
    ...                        global_clipnorm=20.0)
    >>> optimizer.apply(gradients, model.trainable_variables)
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        param_groups=None,
        global_clipnorm=None,
        name="grouped_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, global_clipnorm=global_clipnorm, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2_weight_decay = float(weight_decay)
        self.param_groups = {
            path: group if isinstance(group, ParamGroup) else ParamGroup(**group)
            for path, group in (param_groups or {}).items()
        }

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._groups = [self.param_groups.get(variable.path, ParamGroup()) for variable in variables]
        self._momentums = []
        if self.momentum > 0:
            self._momentums = [
                self.add_variable_from_reference(variable, "momentum") for variable in variables
            ]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        group = self._groups[index]
        gradient = ops.cast(gradient, variable.dtype)
        if group.decay and self.l2_weight_decay:
            gradient = gradient + ops.cast(self.l2_weight_decay, variable.dtype) * variable
        step = gradient
        if self.momentum > 0:
            buffer = self._momentums[index]
            momentum = ops.cast(self.momentum, variable.dtype)
            self.assign(buffer, momentum * buffer + gradient)
            step = gradient + momentum * buffer if self.nesterov else buffer
        lr = ops.cast(learning_rate, variable.dtype) * ops.cast(group.lr_mult, variable.dtype)
        self.assign_sub(variable, lr * step)

    def _clip_gradients(self, grads):
        if not self.global_clipnorm:
            return grads
        squared = ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads if g is not None]))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            squared = context.all_reduce(tf.distribute.ReduceOp.MEAN, squared)
        scale = ops.minimum(1.0, self.global_clipnorm / ops.maximum(ops.sqrt(squared), 1e-12))
        return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # The training step already summed the gradients over replicas so that
        # clipping sees the global gradient; summing again would scale them by
        # the number of replicas.
        return list(grads_and_vars)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay": self.l2_weight_decay,
                "param_groups": {
                    path: dataclasses.asdict(group) for path, group in self.param_groups.items()
                },
            }
        )
        return config


def all_reduce_gradients(gradients):
    """Sums gradients over the replicas of the current replica context."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(gradients)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(gradients))


def _check_keras_internals():
    # `_all_reduce_sum_gradients` and `_clip_gradients` are the hooks Keras
    # calls; fail loudly if an upgrade renames them (the overrides would
    # silently stop working: replicas would double-count or clip partial
    # gradients).
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    for hook in ("_all_reduce_sum_gradients", "_clip_gradients"):
        if not hasattr(TFOptimizer, hook):
            raise RuntimeError(
                f"keras TFOptimizer no longer has {hook}: GroupedSGD's gradient aggregation "
                "and clipping must be revisited"
            )


if keras.backend.backend() == "tensorflow":
    _check_keras_internals()
