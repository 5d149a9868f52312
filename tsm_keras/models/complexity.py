"""FLOPs and parameters in the convention of MMAction2's results table.

The convention and the table's figures: docs/reference.md#flops-and-parameters.

- "FLOPs" are multiply-accumulates of the backbone for one clip
  (`1 x T x H x W x 3`), counting convolutions, Non-local matrix products and
  2 operations per BatchNorm output element; the classifier head, activations,
  additions and pooling are not counted.
- "params" count every weight of the whole model (classifier included) except
  BatchNorm moving statistics.
"""

import math

import keras

HEAD_LAYERS = ("fc_cls",)


def _size(shape):
    return math.prod(int(dim) for dim in shape)


def layer_multiply_accumulates(layer, input_shape, output_shape):
    """MACs of one layer call on concrete shapes (0 for uncounted layers)."""
    if hasattr(layer, "multiply_accumulates"):
        return layer.multiply_accumulates(input_shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel_h, kernel_w = layer.kernel_size
        return _size(output_shape) * kernel_h * kernel_w
    if isinstance(layer, keras.layers.Conv2D):
        kernel_h, kernel_w = layer.kernel_size
        in_per_group = input_shape[-1] // layer.groups
        return _size(output_shape) * kernel_h * kernel_w * in_per_group
    if isinstance(layer, keras.layers.Dense):
        return _size(output_shape) * input_shape[-1]
    if isinstance(layer, keras.layers.BatchNormalization):
        return 2 * _size(output_shape)
    return 0


def count_params(model):
    """Weights of the whole model, without BatchNorm moving statistics."""
    statistics = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics.update(id(v) for v in (layer.moving_mean, layer.moving_variance))
    return sum(_size(v.shape) for v in model.weights if id(v) not in statistics)


def model_complexity(model, batch_size=1):
    """`{"flops": backbone MACs for `batch_size` clips, "params": ...}`.

    Shapes are propagated symbolically through the functional graph with a
    concrete batch, so layers after a temporal pool are counted for the frames
    they really see.

    Example:

    >>> model = build_tsm("resnet50", num_classes=174, layout="torch")
    >>> round(model_complexity(model)["flops"] / 1e9, 2)
    32.88
    """
    total = 0

    def count(operation, *args, **kwargs):
        nonlocal total
        outputs = operation.compute_output_spec(*args, **kwargs)
        if isinstance(operation, keras.layers.Layer) and operation.name not in HEAD_LAYERS:
            first = keras.tree.flatten(args)[0]
            output = keras.tree.flatten(outputs)[0]
            total += layer_multiply_accumulates(
                operation, tuple(first.shape), tuple(output.shape)
            )
        return outputs

    inputs = [
        keras.KerasTensor((batch_size,) + tuple(tensor.shape[1:]), dtype=tensor.dtype)
        for tensor in model.inputs
    ]
    model._run_through_graph(inputs, call_fn=count)
    return {"flops": int(total), "params": int(count_params(model))}

