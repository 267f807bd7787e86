"""Masked autoregressive flows on tfp bijectors: MAF for densities (priors), IAF for samplers (posteriors).

A stack applies `num_stacks` autoregressive layers, each preceded by a fixed permutation (a circular shift by the
layer's index) so that every coordinate gets to condition on every other one across the stack.
"""
import numpy as np
import tensorflow_probability as tfp

from utils.nn import get_activation

tfb = tfp.bijectors
tfd = tfp.distributions


def make_mades(num_stacks, event_dim, hidden_units, activation, flag="--ar_activation"):
    """The shift-and-log-scale networks of a flow: one MADE per layer."""
    act = get_activation(activation, flag)
    return [tfb.AutoregressiveNetwork(params=2, event_shape=[event_dim], hidden_units=list(hidden_units),
                                      activation=act, name=f"made{i}") for i in range(num_stacks)]


def flow(base, mades, inverse_autoregressive=False):
    """`base` pushed through the stack of `mades`.

    MAF (default): the density costs one network pass per layer, sampling `event_dim` passes; for priors.
    IAF (`inverse_autoregressive=True`): sampling costs one pass per layer, and the density of the flow's own
    samples is cheap too (tfp caches the forward pass); for posteriors.
    """
    dim = base.event_shape[-1]
    bijectors = []
    for i, made in enumerate(mades):
        layer = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
        if inverse_autoregressive:
            layer = tfb.Invert(layer)
        bijectors.append(layer)
        bijectors.append(tfb.Permute(np.roll(np.arange(dim), i + 1)))
    # tfb.Chain applies its list last-to-first: reverse so that the first MADE acts first.
    return tfd.TransformedDistribution(base, tfb.Chain(bijectors[::-1]))
