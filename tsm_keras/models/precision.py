"""Numeric precision of a TSM: the names tsm_keras accepts and the Keras dtype policy of each.

A precision is a name of `PRECISION_POLICIES`: `"float32"`, `"bfloat16"`
(Keras `mixed_bfloat16`: float32 variables, bfloat16 compute; fast where the
hardware has bfloat16 matrix units) or `"mixed_float16"` (float16 compute,
for GPUs; training adds dynamic loss scaling). `"mixed_bfloat16"` is accepted
as a synonym of `"bfloat16"` (`canonical_precision`). In every precision the
model's logits are float32: the last layer, `SegmentConsensus`, runs in
float32, so the softmax of the loss and of the test protocol is float32, as
Keras' mixed-precision guide asks.

A Keras layer takes the global dtype policy when it is built, so a model runs
in a precision when it is built under it: `precision_scope(precision)` sets
the policy for a block (training, building a test model), and
`with_precision(model, precision)` rebuilds an existing TSM (for example a
float32 `.keras` file) in another precision with the same weights.
"""

import contextlib

import keras

# The one mapping from tsm_keras precision names to Keras dtype policies.
PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16"}
PRECISION_SYNONYMS = {"mixed_bfloat16": "bfloat16"}
PRECISIONS = tuple(PRECISION_POLICIES)
# What inference (`tsm-test`, `tsm-predict`) offers on a CPU: float16 compute is a GPU option.
INFERENCE_PRECISIONS = ("float32", "bfloat16")


def canonical_precision(precision):
    """The documented name of `precision` (`"mixed_bfloat16"` -> `"bfloat16"`).

    Raises:
        ValueError: `precision` is not a known name (the message lists them).
    """
    name = PRECISION_SYNONYMS.get(precision, precision)
    if name not in PRECISION_POLICIES:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)} (or a synonym, "
                         f"{list(PRECISION_SYNONYMS)}), got {precision!r}")
    return name


def dtype_policy(precision):
    """The Keras dtype policy name of a precision (`"bfloat16"` -> `"mixed_bfloat16"`)."""
    return PRECISION_POLICIES[canonical_precision(precision)]


@contextlib.contextmanager
def dtype_policy_scope(policy):
    """Models built inside take the Keras dtype policy `policy` (a name or a `DTypePolicy`), restored on exit."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def precision_scope(precision):
    """Models built inside run in `precision` (sets the Keras global dtype policy, restored on exit).

    Example:

    >>> with precision_scope("bfloat16"):
    ...     model = build_tsm("resnet50", num_classes=400)
    >>> model.get_layer("stem_conv").compute_dtype, model.get_layer("stem_conv").kernel.dtype
    ('bfloat16', 'float32')
    """
    return dtype_policy_scope(dtype_policy(precision))


def model_precision(model):
    """The precision a TSM was built in (the compute dtype of its first weighted layer)."""
    layer = next(layer for layer in model.layers if layer.weights)
    for name, policy in PRECISION_POLICIES.items():
        if keras.dtype_policies.get(policy).compute_dtype == layer.compute_dtype:
            return name
    raise ValueError(f"{model.name}: computes in {layer.compute_dtype}, not one of {list(PRECISIONS)}")


def with_precision(model, precision):
    """`model` running in `precision`: the same TSM rebuilt under its dtype policy, same weights.

    Variables stay float32 in every precision, so the weights copy as they
    are. The model itself is returned when it already runs in `precision`.

    Args:
        model: a tsm_keras model (`TSM`, `OnlineTSM`: any model whose
            `get_config` holds its architecture and no dtype).
        precision: a name of `PRECISION_POLICIES` or a synonym.

    Returns:
        A model of the same class, architecture and weights.

    Example:

    >>> model = load_tsm("tsm_r50.keras")              # float32
    >>> fast = with_precision(model, "bfloat16")
    >>> fast.get_layer("stem_conv").compute_dtype
    'bfloat16'
    """
    precision = canonical_precision(precision)
    if model_precision(model) == precision:
        return model
    with precision_scope(precision):
        rebuilt = type(model).from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    for source, target in zip(model.layers, rebuilt.layers):
        target.trainable = source.trainable
    return rebuilt
