"""The classifier head shared by the offline `TSM` and the per-frame `OnlineTSM`."""

import keras


def classifier_head(features, spec, dropout=True):
    """Global average pool, dropout and the linear classifier `fc_cls`.

    Both models build their head here, so the layer names (`avg_pool`,
    `dropout`, `fc_cls`) and the initialiser are the same and the weights
    copy by name. Under a mixed policy (`mixed_bfloat16`) `fc_cls` computes
    in float32, as Keras advises for a model's output: logits rounded to
    bfloat16 (8 bits of mantissa) tie or swap when two classes score close.

    Args:
        features: backbone feature map `(N, H, W, C)`.
        spec: the model's `TSMSpec` (`num_classes`, `dropout`, `init_std`).
        dropout: whether to add the dropout layer (the online model is
            inference only and leaves it out).

    Returns:
        The per-frame logits `(N, num_classes)`.

    Example:

    >>> spec = TSMSpec(backbone="mobilenet_v2", num_classes=5)
    >>> classifier_head(keras.Input((7, 7, 1280)), spec).shape
    (None, 5)
    """
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if dropout:
        pooled = keras.layers.Dropout(spec.dropout, name="dropout")(pooled)
    policy = keras.config.dtype_policy()
    return keras.layers.Dense(
        spec.num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=spec.init_std),
        name="fc_cls",
        dtype="float32" if policy.compute_dtype != policy.variable_dtype else None,
    )(pooled)
