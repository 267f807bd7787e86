"""Network builders shared by the scripts, and the names their flags accept: activations, and the prior types
utils/priors.py builds. TensorFlow is imported by the builders, so that a script's parser can use the names
without it."""
from utils.cli import InputError

# The activations by their names in tf.nn ("none": linear).
ACTIVATIONS = ("none", "relu", "leaky_relu", "softplus", "selu", "elu", "tanh", "sigmoid", "swish", "gelu")
PRIOR_TYPES = "std_gaussian, gmm_K, gsm_K, lmm_K, lsm_K (K >= 1 components), deep, maf"


def get_activation(name, flag="--activation"):
    """The tf.nn function of an ACTIVATIONS name (None for "none")."""
    if name not in ACTIVATIONS:
        raise InputError(f"{flag} {name!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
    import tensorflow as tf
    return None if name == "none" else getattr(tf.nn, name)


def make_mlp(units, activation, output_units=None, output_activation=None, name="mlp", dtype="float32"):
    """Dense layers with `units` hidden sizes and `activation`, then an optional output layer.

    `output_units=None` means the last entry of `units` is the output and gets `output_activation`.
    """
    import tensorflow as tf
    sizes = list(units) + ([output_units] if output_units is not None else [])
    layers = []
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        layers.append(tf.keras.layers.Dense(size, activation=output_activation if last else activation,
                                            dtype=dtype, name=f"{name}_dense{i}"))
    return tf.keras.Sequential(layers, name=name)


def make_cnn(filters, kernel_dims, dense_units, activation, output_units=1, name="cnn"):
    """Stride-2 convolutions (`filters[i]` channels, `kernel_dims[i]` wide), then dense layers and a linear output.

    As in the paper's `--model cnn --units 4,8,16,1024 --kernel_dims 9,5,3`: the first len(kernel_dims) entries of
    --units are conv channels, the rest dense sizes.
    """
    import tensorflow as tf
    layers = [tf.keras.layers.Conv2D(f, k, strides=2, padding="same", activation=activation, name=f"{name}_conv{i}")
              for i, (f, k) in enumerate(zip(filters, kernel_dims))]
    layers.append(tf.keras.layers.Flatten(name=f"{name}_flatten"))
    layers += [tf.keras.layers.Dense(u, activation=activation, name=f"{name}_dense{i}") for i, u in enumerate(dense_units)]
    layers.append(tf.keras.layers.Dense(output_units, name=f"{name}_out"))
    return tf.keras.Sequential(layers, name=name)
