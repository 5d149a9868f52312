"""Random but meaningful weights, float64 builds and logit comparisons for the reparameterization tests."""

import contextlib

import keras
import numpy as np


def randomize(model, seed=0):
    """Random BN statistics and affine terms, SE weights and classifier.

    The logits are far from zero but depend little on the input: the random
    statistics do not match the activations, so deep features collapse onto
    the BN offsets. Use `calibrate` where the input must matter.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels),
                    rng.normal(0.0, 0.2, channels),
                    rng.normal(0.0, 0.2, channels),
                    rng.uniform(0.5, 2.0, channels),
                ]
            )
        elif layer.weights and (layer.name == "fc_cls" or "_se_" in layer.name):
            layer.set_weights([rng.normal(0.0, 0.3, w.shape) for w in layer.get_weights()])
    return model


def calibrate(model, clips, seed=0):
    """Random BN gammas/betas and SE/classifier biases, BN statistics measured on `clips`.

    Every BN layer then normalises what it really sees (its moving mean and
    variance are the batch statistics of one training-mode pass), so features
    stay O(1) at every depth and the logits depend strongly on the input.
    """
    rng = np.random.default_rng(seed)
    batch_norms = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in batch_norms:
        gamma, beta, mean, variance = layer.get_weights()
        layer.set_weights(
            [rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0.0, 0.2, beta.shape), mean, variance]
        )
    for layer in model.layers:
        if layer.weights and (layer.name == "fc_cls" or "_se_" in layer.name):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.3, bias.shape)])
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    model(clips, training=True)
    for layer, momentum in zip(batch_norms, momenta):
        layer.momentum = momentum
    return model


@contextlib.contextmanager
def float64():
    """Builds float64 models (random deep nets amplify float32 rounding ~1000x)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def logits(model, clips):
    """The model's logits on `clips` in inference mode, as numpy."""
    return keras.ops.convert_to_numpy(model(clips, training=False))


def relative_difference(reference, other):
    """max |reference - other| / max |reference|."""
    return np.abs(reference - other).max() / np.abs(reference).max()


def streamed_logits(online, clip):
    """Mean per-frame logits of an online model fed the frames of `clip` `(T, H, W, 3)` one by one."""
    states, frame_logits = online.init_states(), []
    for frame in clip:
        outputs = online({"image": frame[None], **states})
        outputs = {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}
        frame_logits.append(outputs.pop("logits"))
        states = outputs
    return np.mean(frame_logits, axis=0)
