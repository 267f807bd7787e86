"""The beta-VAE of rdub_mlp.py, its engine (its docstring describes the bound): an MLP encoder, a Gaussian, uniform
or IAF posterior, an optional MLP decoder and a learned prior (utils/priors.py); the model's per-sample rate and
distortion estimates and its loss (`RDVAE`); and, for the uniform posterior (nonlinear transform coding), the
range coding of a whole set into one bitstream with tfc's entropy model, decoded and checked (`ntc_bitstream`).
"""
import math

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc
import tensorflow_probability as tfp

from utils import flows, training
from utils.nn import get_activation, make_mlp

tfd = tfp.distributions


class RDVAE(training.LossModel):
    """Encoder -> posterior q(y|x) -> sample y -> decoder (or none: x_hat = y), with a learned prior p(y)."""
    METRICS = ("loss", "rate", "mse")

    def __init__(self, data_dim, latent_dim, encoder_units, decoder_units, encoder_activation,
                 decoder_activation, posterior_type, prior, iaf_mades, lmbda, rate_scale):
        super().__init__()
        self.data_dim, self.latent_dim, self.posterior_type = data_dim, latent_dim, posterior_type
        self.lmbda, self.rate_scale = float(lmbda), float(rate_scale)
        stochastic_scale = posterior_type in ("gaussian", "iaf")
        self.encoder = make_mlp(encoder_units, get_activation(encoder_activation, "--encoder_activation"),
                                output_units=latent_dim * (2 if stochastic_scale else 1), name="encoder")
        self.decoder = None if decoder_units is None else make_mlp(
            decoder_units, get_activation(decoder_activation, "--decoder_activation"), output_units=data_dim,
            name="decoder")
        self.prior = prior
        self.iaf_mades = iaf_mades
        self.encoder.build([None, data_dim])
        if self.decoder is not None:
            self.decoder.build([None, latent_dim])
        self.per_sample(tf.zeros([1, data_dim]))  # creates the prior's and flows' variables

    def posterior(self, x):
        """q(y|x) for the gaussian/iaf posteriors; the center of the unit box for the uniform one."""
        out = self.encoder(x)
        if self.posterior_type == "uniform":
            return out
        loc, raw_scale = tf.split(out, 2, axis=-1)
        # Shifted so that a fresh encoder (output ~ 0) starts at unit scale.
        q = tfd.MultivariateNormalDiag(loc, tf.nn.softplus(raw_scale + math.log(math.e - 1)) + 1e-6)
        if self.posterior_type == "iaf":
            q = flows.flow(q, self.iaf_mades, inverse_autoregressive=True)
        return q

    def reconstruct(self, y):
        return y if self.decoder is None else self.decoder(y)

    def per_sample(self, x):
        """Per-sample KL estimate in nats, log q(y|x) - log p(y) at one y ~ q(y|x), and per-sample MSE."""
        if self.posterior_type == "uniform":
            center = self.posterior(x)
            y = center + tf.random.uniform(tf.shape(center), -0.5, 0.5)
            kl = -self.prior.log_prob(y, noisy=True)  # log q = 0: the unit box has density 1
        else:
            q = self.posterior(x)
            y = q.sample()
            kl = q.log_prob(y) - self.prior.log_prob(y)
        mse = tf.reduce_mean(tf.math.squared_difference(x, self.reconstruct(y)), axis=-1)
        return kl, mse

    def losses_of(self, x, training=False):
        kl, mse = self.per_sample(x)
        rate = tf.reduce_mean(kl) * self.rate_scale
        mse = tf.reduce_mean(mse)
        return {"loss": rate + self.lmbda * mse, "rate": rate, "mse": mse}


def ntc_bitstream(model, x):
    """Quantizes, range-codes, decodes and checks `x`; returns (bytes, estimated bits, mse of the decode).

    The whole set is one bitstream (coding rank 2), so the coder's few bytes of flush overhead are shared.
    """
    @tf.function
    def code(x):
        # Stateless: the range-coding tables are built in this graph, much faster than eagerly.
        em = tfc.ContinuousBatchedEntropyModel(model.prior.distribution(noisy=True), coding_rank=2,
                                               compression=True, stateless=True)
        y = model.posterior(x)
        string = em.compress(y)
        y_hat = em.decompress(string, tf.shape(x)[:1])
        _, bits = em(y, training=False)
        return string, y_hat, em.quantize(y), bits

    string, y_hat, expected, bits = code(tf.constant(x))
    if not np.array_equal(y_hat.numpy(), expected.numpy()):
        raise RuntimeError("range decoding did not reproduce the quantized latents")
    x_hat = model.reconstruct(y_hat).numpy()
    if not np.array_equal(x_hat, model.reconstruct(expected).numpy()):
        raise RuntimeError("the reconstruction from the decoded bitstream differs from the encoder's")
    return len(string.numpy()), float(bits), np.mean((x - x_hat) ** 2, axis=-1)
