"""Network builders shared by the scripts."""
import tensorflow as tf

from utils.cli import InputError

ACTIVATIONS = {
    "none": None,
    "relu": tf.nn.relu,
    "leaky_relu": tf.nn.leaky_relu,
    "softplus": tf.nn.softplus,
    "selu": tf.nn.selu,
    "elu": tf.nn.elu,
    "tanh": tf.nn.tanh,
    "sigmoid": tf.nn.sigmoid,
    "swish": tf.nn.swish,
    "gelu": tf.nn.gelu,
}


def get_activation(name, flag="--activation"):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise InputError(f"{flag} {name!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")


def make_mlp(units, activation, output_units=None, output_activation=None, name="mlp", dtype=tf.float32):
    """Dense layers with `units` hidden sizes and `activation`, then an optional output layer.

    `output_units=None` means the last entry of `units` is the output and gets `output_activation`.
    """
    sizes = list(units) + ([output_units] if output_units is not None else [])
    layers = []
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        layers.append(tf.keras.layers.Dense(size, activation=output_activation if last else activation,
                                            dtype=dtype, name=f"{name}_dense{i}"))
    return tf.keras.Sequential(layers, name=name)
