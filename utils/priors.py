"""Learned priors p(y) over a latent vector, as Keras layers whose variables train with the model.

`--prior_type`:
- `std_gaussian`: N(0, I), nothing learned;
- `gmm_K` / `gsm_K` / `lmm_K` / `lsm_K`: per dimension a K-component mixture of Gaussians / Gaussians with zero
  mean (scale mixture) / logistics / zero-mean logistics; dimensions independent;
- `deep`: tfc's deep factorized density (Balle et al. 2018), one per dimension;
- `maf`: a masked autoregressive flow on a standard normal (not factorized).

Every prior gives `log_prob(y)` of a batch [batch, dim] summed over dimensions -> [batch]. Factorized priors also
give `distribution(noisy)`, a tfp distribution with batch shape [dim]; `noisy=True` convolves it with the
unit-width uniform (the density of y + u, u ~ U(-1/2, 1/2)), which is the NTC prior and what tfc's entropy
models range-code with.
"""
import re

import tensorflow as tf
import tensorflow_compression as tfc
import tensorflow_probability as tfp

from utils import flows
from utils.cli import InputError
from utils.nn import PRIOR_TYPES

tfd = tfp.distributions

_MIXTURE = re.compile(r"^([gl])([ms])m_(\d+)$")


class Prior(tf.keras.layers.Layer):
    factorized = True

    def distribution(self, noisy=False):
        raise NotImplementedError

    def log_prob(self, y, noisy=False):
        return tf.reduce_sum(self.distribution(noisy).log_prob(y), axis=-1)


class StdGaussian(Prior):
    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def distribution(self, noisy=False):
        d = tfd.Normal(tf.zeros([self.dim]), tf.ones([self.dim]))
        return tfc.UniformNoiseAdapter(d) if noisy else d


class _StableTailMixture(tfd.MixtureSameFamily):
    """tfp's mixture with a log survival function from the components' own. tfp's default, log(1 - cdf), rounds to
    -inf a few scales right of the mixture in float32, so the noisy (NTC) log-prob there was -inf and its gradient
    NaN: NTC training with a mixture prior (`--posterior_type uniform`) died with a NaN loss."""

    def _log_survival_function(self, x):
        log_sf = self.components_distribution.log_survival_function(self._pad_sample_dims(x))  # [S, B, k]
        log_w = tf.math.log_softmax(self.mixture_distribution.logits_parameter(), axis=-1)
        return tf.reduce_logsumexp(log_sf + log_w, axis=-1)


class Mixture(Prior):
    """K-component scalar mixture per dimension (Gaussian or logistic; location or scale mixture)."""

    def __init__(self, dim, components, logistic, scale_only, **kwargs):
        super().__init__(**kwargs)
        self.logistic, self.scale_only = logistic, scale_only
        shape = (dim, components)
        normal = tf.keras.initializers.RandomNormal
        self.logits = self.add_weight("logits", shape, initializer=normal(stddev=0.1))
        # Components start broad (scale ~ 1) and spread out, so they can split the data between them.
        self.raw_scale = self.add_weight("raw_scale", shape, initializer=normal(mean=0.55, stddev=0.1))
        self.loc = None if scale_only else self.add_weight("loc", shape, initializer=normal(stddev=1.0 if components > 1 else 0.0))

    def distribution(self, noisy=False):
        family = tfd.Logistic if self.logistic else tfd.Normal
        loc = tf.zeros_like(self.raw_scale) if self.loc is None else self.loc
        d = _StableTailMixture(tfd.Categorical(logits=self.logits),
                               family(loc=loc, scale=tf.nn.softplus(self.raw_scale) + 1e-6))
        return tfc.UniformNoiseAdapter(d) if noisy else d


class Deep(Prior):
    """tfc's deep factorized density; its variables live in a tf.Module that this layer tracks."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.noisy_deep = tfc.NoisyDeepFactorized(batch_shape=[dim])

    def distribution(self, noisy=False):
        return self.noisy_deep if noisy else self.noisy_deep.base


class MAF(Prior):
    factorized = False

    def __init__(self, dim, stacks, hidden_units, activation, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.mades = flows.make_mades(stacks, dim, hidden_units, activation)

    def log_prob(self, y, noisy=False):
        if noisy:
            raise InputError("--prior_type maf is not factorized: it cannot be used with --posterior_type uniform")
        base = tfd.MultivariateNormalDiag(tf.zeros([self.dim]), tf.ones([self.dim]))
        return flows.flow(base, self.mades).log_prob(y)


def make_prior(prior_type, dim, maf_stacks=3, ar_hidden_units=(10, 10), ar_activation="relu"):
    if prior_type == "std_gaussian":
        return StdGaussian(dim, name="prior")
    if prior_type == "deep":
        return Deep(dim, name="prior")
    if prior_type == "maf":
        return MAF(dim, maf_stacks, ar_hidden_units, ar_activation, name="prior")
    m = _MIXTURE.match(prior_type)
    if m and int(m.group(3)) >= 1:
        return Mixture(dim, int(m.group(3)), logistic=m.group(1) == "l", scale_only=m.group(2) == "s", name="prior")
    raise InputError(f"--prior_type {prior_type!r} is unknown; choose one of {PRIOR_TYPES}")
