"""The hierarchical ResNet-VAE of Yang & Mandt (ICLR 2022): its layers and the model.

resnet_vae.py (its docstring describes the architecture) trains and evaluates it as an R-D upper bound; rec.py
codes its latents into files with relative entropy coding. Both build it from the same flags
(utils/hvae_flags.py):

    hvae_flags.add_model_flags(parser); args = parser.parse_args(); hvae_flags.check_model_flags(args)
    model = hvae.build(args)

The ResNet-VAE has one top-down pass, ResNetVAE.top_down, that both use. It walks the levels from the top,
computes each level's prior (and its posterior, given the encoder's features from ResNetVAE.bottom_up) and asks a
callback for the level's latent, handing it a Step:

    features = model.bottom_up(x)                       # x on [0, 255]: padded and preprocessed by the model
    out = model.top_down(sample, features)              # sample(step) -> the level's latent z (float32)
    x_hat = model.reconstruction(model.crop(out, height, width))

Training's callback (ResNetVAE.forward) takes step.sample_posterior(), a posterior sample and its KL; rec.py's
encoder codes z against step.prior (an AR level slice by slice, step.slice_conditionals) and returns the decoded
latent; its decoder, without features (model.top_down(sample, top_shape=model.top_shape(height, width))), reads
z from the file.
"""
import math

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from utils import images, layers, mnist, training
from utils.cli import InputError
from utils.hvae_flags import model_flags
from utils.priors import MAF

MAF_ACTIVATION = "leaky_relu"
SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(x + SOFTPLUS_ONE) = 1 at x = 0: scales start near 1
AR_SUPPORT_RATIO = 0.5  # slice s of an AR prior sees the first min(s, round(ratio * slices)) slices
AR_GATE_OFFSET = 1.0  # gates are sigmoid(offset + net(z)); the first slice has net = 0, a fixed gate of 0.73
# Every leaky ReLU is tf.nn.leaky_relu (slope 0.2), as in the paper's code.
LOGISTIC_SCALE_FLOOR = -7.0  # log scale floor of the discretized logistic (on [-1, 1] units, as PixelCNN++)
LMB_FREQUENCIES = 8  # the lambda embedding: sin and cos of pi 2^k t, k < 8, t = normalized ln(lambda)
LMB_TOP_FREQUENCY = 128.0  # its highest frequency, pi 128 (with more frequencies they are geometric up to it)
LMB_UNITS = 128  # width of the lambda embedding's MLP


def positive_scale(raw):
    return tf.nn.softplus(raw + SOFTPLUS_ONE)


def per_image(x):
    """Sum over all but the batch axis."""
    return tf.reduce_sum(x, axis=tf.range(1, tf.rank(x)))


def normal_log_prob(z, loc, scale):
    """Elementwise log N(z; loc, scale^2)."""
    return -0.5 * tf.square((z - loc) / scale) - tf.math.log(scale) - 0.5 * math.log(2 * math.pi)


def normal_kl(q_loc, q_scale, p_loc, p_scale):
    """Elementwise KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2)) in nats."""
    return (tf.math.log(p_scale / q_scale) + (tf.square(q_scale) + tf.square(q_loc - p_loc)) / (2 * tf.square(p_scale))
            - 0.5)


def sample_normal(loc, scale):
    return loc + scale * tf.random.normal(tf.shape(loc))


class LambdaEmbedding(tf.keras.layers.Layer):
    """lambda [batch] -> features [batch, units]: ln(lambda) normalized to t in [0, 1] over the trained range,
    sin and cos of pi R^(k / (F - 1)) t for k < F frequencies (R = LMB_TOP_FREQUENCY: with F = 8, pi 2^k t), then
    a two-layer MLP."""

    def __init__(self, lmb_range, frequencies=LMB_FREQUENCIES, units=LMB_UNITS, **kwargs):
        super().__init__(**kwargs)
        self.log_lo, self.log_hi = (math.log(v) for v in lmb_range)
        self.freqs = (math.pi * LMB_TOP_FREQUENCY ** (np.arange(frequencies) / (frequencies - 1))).astype(np.float32)
        self.mlp = tf.keras.Sequential([tf.keras.layers.Dense(units, tf.nn.gelu), tf.keras.layers.Dense(units)])

    def call(self, lmbda):
        t = (tf.math.log(lmbda) - self.log_lo) / (self.log_hi - self.log_lo)
        angles = t[:, None] * self.freqs
        return self.mlp(tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1))


class Modulation(tf.keras.layers.Layer):
    """x (1 + scale) + shift, per image and channel, from the lambda embedding (through `activation` first, if
    given); zero-initialized, so a conditioned model starts as the unconditioned one."""

    def __init__(self, channels, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self.dense = tf.keras.layers.Dense(2 * channels, kernel_initializer="zeros")

    def call(self, x, embedding):
        if self.activation is not None:
            embedding = self.activation(embedding)
        scale, shift = tf.split(self.dense(embedding)[:, None, None, :], 2, axis=-1)
        return x * (1 + scale) + shift


def modulated(modulation, x, embedding):
    """x through a block's lambda modulation; x itself in a fixed-rate model (modulation None)."""
    return x if modulation is None else modulation(x, embedding)


class EncoderBlock(tf.keras.layers.Layer):
    """shortcut(x) + conv2(conv1(x)) at half the side; conv2 ends in GDN except in the top block. With lambda
    conditioning the residual branch's (normalized) output is modulated before the sum."""

    def __init__(self, filters, gdn=True, conditioned=False, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = layers.conv(filters, 3, 2, tf.nn.leaky_relu)
        self.conv2 = layers.conv(filters, 3, 1, tfc.GDN() if gdn else None)
        self.shortcut = layers.conv(filters, 1, 2, kernel_parameter="variable")
        self.modulation = Modulation(filters) if conditioned else None

    def call(self, x, embedding=None):
        return self.shortcut(x) + modulated(self.modulation, self.conv2(self.conv1(x)), embedding)


class DecoderBlock(tf.keras.layers.Layer):
    """shortcut(t) + conv2(upconv1(t)) at twice the side, leaky ReLU after both convolutions (the residual branch
    modulated with lambda conditioning)."""

    def __init__(self, filters, conditioned=False, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = layers.deconv(filters, 3, 2, tf.nn.leaky_relu)
        self.conv2 = layers.deconv(filters, 3, 1, tf.nn.leaky_relu)
        self.shortcut = layers.deconv(filters, 1, 2, kernel_parameter="variable")
        self.modulation = Modulation(filters) if conditioned else None

    def call(self, t, embedding=None):
        return self.shortcut(t) + modulated(self.modulation, self.conv2(self.conv1(t)), embedding)


class SliceAutoregressive(tf.keras.layers.Layer):
    """z split into S equal channel slices -> [0, f_1(z_<1), f_2(z_<2), ...], where f_s sees only the first
    min(s, m) slices, m = round(AR_SUPPORT_RATIO * S): every output slice depends on earlier slices alone."""

    def __init__(self, channels, slices, **kwargs):
        super().__init__(**kwargs)
        self.slices = min(slices, channels)
        depth = channels // self.slices
        self.support = round(self.slices * AR_SUPPORT_RATIO)

        def width(a):  # hidden widths interpolate between the support and one slice
            return round(a * self.support + (1 - a)) * depth

        self.nets = [tf.keras.Sequential([
            layers.deconv(width(0.6), 3, 1, tf.nn.leaky_relu, kernel_parameter="variable"),
            layers.deconv(width(0.3), 3, 1, tf.nn.leaky_relu, kernel_parameter="variable"),
            layers.deconv(depth, 5, 1, kernel_parameter="variable"),
        ]) for _ in range(1, self.slices)]

    def call(self, z):
        parts = tf.split(z, self.slices, axis=-1)
        out = [tf.zeros_like(parts[0])]
        for s, net in enumerate(self.nets, start=1):
            out.append(net(tf.concat(parts[:min(s, self.support)], axis=-1)))
        return tf.concat(out, axis=-1)


class LatentLevel(tf.keras.layers.Layer):
    """One latent level below the top: prior from the top-down features t, posterior from the bottom-up h and t."""

    def __init__(self, filters, channels, ar_slices=None, conditioned=False, **kwargs):
        super().__init__(**kwargs)
        c = channels
        self.modulation = Modulation(filters) if conditioned else None
        self.bottom_up = layers.conv(2 * c, 3, kernel_parameter="variable")  # posterior mean, scale: h's part
        self.top_down = layers.deconv(2 * c, 3, 1, tf.nn.leaky_relu, kernel_parameter="variable")  # ... and t's part
        self.prior = layers.deconv(3 * c, 3, kernel_parameter="variable")  # features, prior mean, prior scale
        self.merge = layers.deconv(filters, 3, 1, tf.nn.leaky_relu, kernel_parameter="variable")
        self.ar = ar_slices is not None
        if self.ar:
            self.ar_shift = SliceAutoregressive(c, ar_slices, name="ar_shift")
            self.ar_gate = SliceAutoregressive(c, ar_slices, name="ar_gate")

    def prior_params(self, t):
        """(features, (p mean, p scale)) from the top-down features t; p is the AR flow's base with an AR prior."""
        feats, p_loc, p_raw = tf.split(self.prior(t), 3, axis=-1)
        return feats, (p_loc, positive_scale(p_raw))

    def distributions(self, h, t):
        """(features, (q mean, q scale), (p mean, p scale)); p is the AR flow's base with an AR prior."""
        feats, (p_loc, p_scale) = self.prior_params(t)
        bu_loc, bu_raw = tf.split(self.bottom_up(h), 2, axis=-1)
        td_loc, td_raw = tf.split(self.top_down(t), 2, axis=-1)
        q_loc, q_scale = bu_loc + td_loc, positive_scale(bu_raw) + positive_scale(td_raw)
        if not self.ar:  # the residual posterior: an offset from the prior's mean and scale
            q_loc, q_scale = q_loc + p_loc, q_scale + p_scale
        return feats, (q_loc, q_scale), (p_loc, p_scale)

    def ar_noise(self, z):
        """The flow's inverse z -> eps = g z + (1 - g) shift, g = sigmoid(offset + gate(z)), and log g (elementwise);
        g and shift of a slice depend on earlier slices only, so the Jacobian is triangular with diagonal g."""
        gate = tf.sigmoid(AR_GATE_OFFSET + self.ar_gate(z))
        return gate * z + (1 - gate) * self.ar_shift(z), tf.math.log(gate)

    def slice_conditionals(self, prior, sample_slice):
        """An AR level slice by slice, for a coder: given slices < s, the flow z_s = (eps_s - (1 - g_s) shift_s) / g_s
        of eps_s ~ N(m_s, s_s^2) makes slice s Gaussian, N((m_s - (1 - g_s) shift_s) / g_s, (s_s / g_s)^2), with
        g_s and shift_s computed from the earlier slices (later ones are zeros: the flow's nets for slice s never
        read them). Calls sample_slice(s, channels (a slice of the last axis), mean, scale) for s = 0, 1, ...
        (float64 numpy; it returns slice s of the latent) and returns the latent (float64 numpy). The product of
        the conditionals is the flow's density: N(eps; prior) times the Jacobian's determinant."""
        p_loc, p_scale = (np.asarray(a, np.float64) for a in prior)
        slices = self.ar_shift.slices
        depth = p_loc.shape[-1] // slices
        z = np.zeros(p_loc.shape)
        for s in range(slices):
            cut = slice(s * depth, (s + 1) * depth)
            zf = tf.constant(z, tf.float32)
            gate = tf.sigmoid(AR_GATE_OFFSET + self.ar_gate(zf)).numpy()[..., cut].astype(np.float64)
            shift = self.ar_shift(zf).numpy()[..., cut].astype(np.float64)
            z[..., cut] = sample_slice(s, cut, (p_loc[..., cut] - (1 - gate) * shift) / gate, p_scale[..., cut] / gate)
        return z

    def sample_posterior(self, posterior, prior):
        """(z ~ q, the level's KL per image in nats): analytic for a Gaussian prior; single-sample
        log q(z) - log p(z) for the AR flow."""
        q_loc, q_scale = posterior
        p_loc, p_scale = prior
        z = sample_normal(q_loc, q_scale)
        if self.ar:
            eps, log_det = self.ar_noise(z)
            kl = per_image(normal_log_prob(z, q_loc, q_scale) - normal_log_prob(eps, p_loc, p_scale) - log_det)
        else:
            kl = per_image(normal_kl(q_loc, q_scale, p_loc, p_scale))
        return z, kl

    def update(self, t, z, feats, embedding=None):
        """t after the level: t + merge([z, feats]), the merge modulated with lambda conditioning."""
        return t + modulated(self.modulation, self.merge(tf.concat([z, feats], axis=-1)), embedding)

    def call(self, h, t, embedding=None):
        """(updated t, KL per image in nats): the level alone, as ResNetVAE.forward's pass runs it."""
        feats, q, p = self.distributions(h, t)
        z, kl = self.sample_posterior(q, p)
        return self.update(t, z, feats, embedding), kl


class Step:
    """One latent level as ResNetVAE.top_down hands it to its callback, in the pass's order (the top first).

    index: the level, bottom-up (levels - 1 is the top); top: whether it is the top level; shape: the latent's
    shape (static, as far as known); posterior: (mean, scale) of q(z_i | x, z_>i), or None when the pass runs
    without the encoder's features (decoding); prior: (mean, scale) of the level's Gaussian prior given the
    latents above (at an AR level, the flow's base), None at the top, whose prior is the model's `top_prior`
    density; ar: whether the level's prior is the autoregressive flow."""

    def __init__(self, model, index, shape, posterior, prior=None, level=None):
        self.model, self.level = model, level
        self.index, self.top, self.shape = index, level is None, tuple(shape)
        self.posterior, self.prior = posterior, prior
        self.ar = level is not None and level.ar

    def sample_posterior(self):
        """(z ~ q, KL per image in nats): what training and evaluation do at every level."""
        if self.top:
            return self.model.sample_top_posterior(self.posterior)
        return self.level.sample_posterior(self.posterior, self.prior)

    def slice_conditionals(self, sample_slice):
        """An AR level's Gaussian conditionals slice by slice (LatentLevel.slice_conditionals)."""
        return self.level.slice_conditionals(self.prior, sample_slice)


class HierarchicalVAE(training.LossModel):
    """What the two architectures share: the objective bpp + lambda * MSE (lambda per image, log-uniform over
    lmb_range, for a variable-rate model), evaluation, building. A subclass defines `forward`, `preprocess`,
    `reconstruction` and the attributes set here. Trained with utils.training.fit."""
    METRICS = ("loss", "bpp", "mse")

    def __init__(self, lmbda, image_channels, lmb_range, pad_multiple, embedding=None):
        super().__init__()
        self.lmbda = float(lmbda)
        self.image_channels = image_channels
        self.lmb_range = lmb_range
        self.pad_multiple = pad_multiple
        self.embedding = embedding
        self.img_dim = None  # a fixed image side (ResNetVAE's --flat_z0)

    def padded_input(self, x):
        """x [batch, H, W, C] in [0, 255], sides padded to multiples of pad_multiple (edge replication), scaled."""
        return self.preprocess(images.pad_to_multiple(x, self.pad_multiple))

    def training_lambdas(self, batch, training):
        """lambda per image: log-uniform over lmb_range in training; its geometric middle for validation (so that
        val_loss, which the plateau schedule watches, is not noisy)."""
        log_lo, log_hi = (math.log(v) for v in self.lmb_range)
        if training:
            return tf.exp(tf.random.uniform([batch], log_lo, log_hi))
        return tf.fill([batch], math.exp((log_lo + log_hi) / 2))

    def losses_of(self, x, training=False):
        batch = tf.shape(x)[0]
        lmbda = None if self.embedding is None else self.training_lambdas(batch, training)
        out, kls = self.forward(x, lmbda)
        x_hat = self.reconstruction(out)
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:-1]), tf.float32)
        bpp = tf.reduce_sum(kls, axis=1) / (pixels * math.log(2))  # per image
        mse = tf.reduce_mean(tf.math.squared_difference(x, x_hat), axis=[1, 2, 3])
        weight = self.lmbda if lmbda is None else lmbda
        return dict(loss=tf.reduce_mean(bpp + weight * mse), bpp=tf.reduce_mean(bpp), mse=tf.reduce_mean(mse))

    def call(self, x, training=False):
        return self.losses_of(x)["loss"]

    def reconstruct(self, x):
        return self.reconstruction(self.forward(x)[0])

    def build_weights(self):
        side = self.img_dim or self.pad_multiple  # the smallest input: building costs little at any width
        self(tf.zeros([1, side, side, self.image_channels]))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([], tf.float32)])
    def estimate(self, image, lmbda):
        """One image [H, W, C] in [0, 255] at lambda (used by a variable-rate model only) -> (x_hat [H, W, C],
        unclipped; KL per level in bits [L])."""
        out, kls = self.forward(image[None], None if self.embedding is None else lmbda[None])
        return self.reconstruction(out)[0], kls[0] / math.log(2)


class ResNetVAE(HierarchicalVAE):
    """The paper's ResNet-VAE (resnet_vae.py's docstring draws it)."""
    OUTPUTS = 1  # decoder outputs per image channel: the reconstruction

    def __init__(self, lmbda, num_filters, latent_channels, ar_prior_levels=0, ar_slices=8, flat_z0=False,
                 img_dim=None, maf_units=(32, 32), maf_stacks=3, image_channels=3, lmb_range=None):
        cond = lmb_range is not None
        levels = len(latent_channels)
        super().__init__(lmbda, image_channels, lmb_range, 2 ** levels,
                         LambdaEmbedding(lmb_range, name="lambda_embedding") if cond else None)
        self.levels = levels
        self.img_dim = img_dim if flat_z0 else None
        f, top = num_filters, latent_channels[-1]
        self.top_channels = top
        self.encoder = [EncoderBlock(f, conditioned=cond, name=f"encoder{i}") for i in range(levels - 1)]
        self.encoder.append(EncoderBlock(2 * top, gdn=False, conditioned=cond, name=f"encoder{levels - 1}"))
        self.latents = [LatentLevel(f, c, ar_slices if i < ar_prior_levels else None, conditioned=cond,
                                    name=f"latent{i}") for i, c in enumerate(latent_channels[:-1])]
        self.decoder = [layers.deconv(self.OUTPUTS * image_channels, 3, 2)]
        self.decoder += [DecoderBlock(f, conditioned=cond, name=f"decoder{i}") for i in range(1, levels)]
        if flat_z0:
            self.flat_dim = (img_dim // self.pad_multiple) ** 2 * top
            self.top_prior = MAF(self.flat_dim, maf_stacks, maf_units, MAF_ACTIVATION, name="maf_prior")
        else:
            self.top_prior = tfc.DeepFactorized(batch_shape=[top])

    def preprocess(self, x):
        return x / 255.0 - 0.5

    def reconstruction(self, out):
        """The reconstruction on [0, 255] from the decoder's output."""
        return (out + 0.5) * 255.0

    def crop(self, out, height, width):
        """The decoder's output on the padded image [batch, H', W', C'] cropped to the image's height and width."""
        return out[:, :height, :width, :]

    def top_shape(self, height, width, batch=1):
        """The top latent's shape for images of height x width (their sides padded to multiples of
        pad_multiple)."""
        m = self.pad_multiple
        return (batch, -(-height // m), -(-width // m), self.top_channels)

    def bottom_up(self, x, embedding=None):
        """The encoder's features [h_0, ..., h_{L-1}] of images x [batch, H, W, image_channels] on [0, 255] (padded
        and preprocessed here); h_{L-1} holds the top posterior's parameters (top_posterior)."""
        h = self.padded_input(x)
        features = []
        for block in self.encoder:
            h = block(h, embedding)
            features.append(h)
        return features

    def top_posterior(self, h_top):
        """(mean, scale) of q(z_{L-1} | x) from the encoder's top features."""
        loc, raw = tf.split(h_top, 2, axis=-1)
        return loc, positive_scale(raw)

    def top_log_prior(self, z):
        """log p(z_{L-1}) per image under the top prior (deep factorized, or the MAF of --flat_z0)."""
        if self.img_dim is not None:
            return self.top_prior.log_prob(tf.reshape(z, [-1, self.flat_dim]))
        return per_image(self.top_prior.log_prob(z))

    def sample_top_posterior(self, posterior):
        """(z ~ q(z_{L-1} | x), its single-sample KL per image in nats: log q(z) - log p(z))."""
        loc, scale = posterior
        z = sample_normal(loc, scale)
        log_p = self.top_log_prior(z)
        return z, per_image(normal_log_prob(z, loc, scale)) - log_p

    def top_kl(self, features, samples, seed):
        """The top level's KL (nats, summed over the batch) as a seeded Monte Carlo estimate of
        E_q log q(z) / p(z) over `samples` draws (the top prior is not Gaussian: no closed form)."""
        loc, scale = self.top_posterior(features[-1])
        z = loc + scale * tf.random.stateless_normal((samples,) + tuple(loc.shape[1:]), [seed, 1])
        log_q = per_image(normal_log_prob(z, loc, scale))
        return float(tf.reduce_mean(log_q - self.top_log_prior(z)))

    def top_down(self, sample, features=None, top_shape=None, embedding=None):
        """The model's top-down pass, the one that training, evaluation and rec.py's coder run.

        Walks the levels from the top down; at each it computes the level's prior from the latents above, and
        its posterior where the encoder's `features` (bottom_up) are given, and asks sample(Step) for the level's
        latent z (float32, the level's shape), which the pass then conditions the levels below on. Training
        takes a posterior sample and keeps its KL (forward); rec.py's encoder codes z with relative entropy
        coding and returns the decoded latent, its decoder (no features; `top_shape` is then needed) reads z
        from the file. Returns the decoder's output on the padded image [batch, H', W', OUTPUTS * channels]
        (crop and reconstruction make the image of it).

        In a tf.function an unseeded random op's seed is the count of ops created before it: adding or moving ops
        ahead of a callback's sample changes which noise training draws (not its law), and so its losses bitwise."""
        if features is None:
            q = None
        else:
            q = self.top_posterior(features[-1])
            top_shape = q[0].shape
        t = sample(Step(self, self.levels - 1, top_shape, q))
        for i in reversed(range(self.levels - 1)):
            level = self.latents[i]
            t = self.decoder[i + 1](t, embedding)
            if features is None:
                feats, p = level.prior_params(t)
                q = None
            else:
                feats, q, p = level.distributions(features[i], t)
            z = sample(Step(self, i, p[0].shape, q, p, level))
            t = level.update(t, z, feats, embedding)
        return self.decoder[0](t)

    def forward(self, x, lmbda=None):
        """x [batch, H, W, image_channels] in [0, 255] -> (the decoder's output [batch, H, W, OUTPUTS * channels],
        KL per image and level in nats [batch, L]): bottom_up, then top_down with a posterior sample at every
        level. Sides that are not multiples of pad_multiple are padded (edge replication) and the output cropped
        back. A variable-rate model (lmb_range) needs lmbda [batch]."""
        shape = tf.shape(x)
        emb = None if self.embedding is None else self.embedding(lmbda)
        features = self.bottom_up(x, emb)
        kls = []

        def sample(step):
            z, kl = step.sample_posterior()
            kls.append(kl)
            return z

        out = self.top_down(sample, features, embedding=emb)
        return self.crop(out, shape[1], shape[2]), tf.stack(kls[::-1], axis=1)  # bottom-up order


class DLogisticResNetVAE(ResNetVAE):
    """The lossless variant (the seed's RVAE likelihood): p(x | z) is a discretized logistic per sub-pixel over
    the 256 grey levels, its mean and log scale from the decoder; trained on the negative ELBO in bits per
    dimension (lambda plays no part). Grey levels 0 and 255 take the tails."""
    METRICS = ("loss", "kl_bpd", "nll_bpd")
    OUTPUTS = 2  # mean and log scale

    def logistic_params(self, out):
        """(mean on [0, 255], scale in grey levels) of each sub-pixel's logistic."""
        loc, log_scale = tf.split(out, 2, axis=-1)
        return self.reconstruction(loc), 127.5 * tf.exp(tf.maximum(log_scale, LOGISTIC_SCALE_FLOOR))

    def reconstruction(self, out):
        return (out[..., :self.image_channels] + 0.5) * 255.0

    def nll_bits(self, x, out):
        """-log2 p(x | z) per image [batch] of integer grey levels x."""
        loc, scale = self.logistic_params(out)
        upper = (x + 0.5 - loc) / scale  # the bin [x - 1/2, x + 1/2] in standard logistic units
        lower = (x - 0.5 - loc) / scale
        # log(sigmoid(u) - sigmoid(l)) = -softplus(-u) - softplus(l) + log(1 - e^(l - u)): no cancellation
        log_mass = -tf.nn.softplus(-upper) - tf.nn.softplus(lower) + tf.math.log(-tf.math.expm1(lower - upper))
        log_mass = tf.where(x < 0.5, -tf.nn.softplus(-upper), tf.where(x > 254.5, -tf.nn.softplus(lower), log_mass))
        return -per_image(log_mass) / math.log(2)

    def losses_of(self, x, training=False):
        out, kls = self.forward(x)
        dims = tf.cast(tf.size(x), tf.float32)
        kl = tf.reduce_sum(kls) / (dims * math.log(2))
        nll = tf.reduce_sum(self.nll_bits(x, out)) / dims
        return dict(loss=kl + nll, kl_bpd=kl, nll_bpd=nll)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
    def elbo_bits(self, x):
        """The negative ELBO's terms in bits per image, (KL [batch], -log2 p(x | z) [batch]), with z ~ q: the KL
        analytic or single-sample as in training."""
        out, kls = self.forward(x)
        return tf.reduce_sum(kls, axis=1) / math.log(2), self.nll_bits(x, out)

    def elbo_bpd(self, image, samples):
        """(KL, -log2 p(x | z)) of one uint8 image [H, W, C] in bits per dimension, each the mean over `samples`
        posterior draws (float64)."""
        x = tf.constant(np.repeat(image[None], samples, axis=0), tf.float32)
        return tuple(float(np.mean(b.numpy().astype(np.float64))) / image.size for b in self.elbo_bits(x))


def logistic_cdf_edges(loc, scale):
    """float64 [n, 257] cdf of each logistic (loc, scale arrays of n) at the 256 grey levels' bin edges, the first
    0 and the last 1 (the end bins take the tails): the coder's tables of the lossless model."""
    loc, scale = np.asarray(loc, np.float64).ravel(), np.asarray(scale, np.float64).ravel()
    edges = np.arange(256) + 0.5
    u = (edges[None, :255] - loc[:, None]) / scale[:, None]
    cdf = 0.5 * (1 + np.tanh(0.5 * u))  # the logistic sigmoid without overflow
    return np.concatenate([np.zeros((len(loc), 1)), cdf, np.ones((len(loc), 1))], axis=1)


# ---- the variable-rate seed's ConvNeXt hierarchy (Duan et al., ICIP 2023; lossy-vae's `rd` model) -----------

CONVNEXT_KERNEL = 7  # depthwise kernel of every ConvNeXt block
CONVNEXT_MLP_RATIO = 2  # hidden width of a block's MLP, in multiples of its width
CONVNEXT_LAYER_SCALE = 1e-6  # residual branches start near zero (layer scale), so the deep stacks start near identity
CONVNEXT_EMBEDDING = (128, 256)  # the lambda embedding: frequencies (sin and cos of each) and MLP width
CONVNEXT_INPUT = (0.4546, 3.6757)  # x/255 -> (x/255 - mean) * scale: the seed's ImageNet pixel statistics
STD_SOFTPLUS_BETA = math.log(2)  # scales are softplus(beta v) / beta: 1 at v = 0 (the seed's std_smooth)
SIGNED_SQRT_FROM = 6.0  # linear_sqrt turns into sign(v) sqrt|v| beyond this


def linear_sqrt(v):
    """The seed's squashing of latent means: sign(v) |v|^(1 - tanh|v| / 2), about v near 0 and sign(v) sqrt|v|
    for large |v|, where it is exactly that beyond SIGNED_SQRT_FROM (the power's gradient misbehaves there)."""
    a = tf.abs(v)
    safe = tf.where(a > 0, a, tf.ones_like(a))  # log 0 would make the unused branch's gradient NaN
    soft = tf.sign(v) * tf.exp((1 - 0.5 * tf.tanh(a)) * tf.math.log(safe))
    soft = tf.where(a > 0, soft, v)
    return tf.where(a <= SIGNED_SQRT_FROM, soft, tf.sign(v) * tf.sqrt(a + 1e-8))


def std_smooth(v):
    return tf.nn.softplus(STD_SOFTPLUS_BETA * v) / STD_SOFTPLUS_BETA


def patch_down(channels, rate):
    return tf.keras.layers.Conv2D(channels, rate, strides=rate)


class PatchUp(tf.keras.layers.Layer):
    """A 1x1 convolution to rate^2 channels per output channel, then depth to space (pixel shuffle)."""

    def __init__(self, channels, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.conv = tf.keras.layers.Conv2D(channels * rate ** 2, 1)

    def call(self, x):
        return tf.nn.depth_to_space(self.conv(x), self.rate)


class ConvNeXtBlock(tf.keras.layers.Layer):
    """x + gamma * MLP(modulation(LayerNorm(depthwise conv(x)))): a ConvNeXt block whose normalization is
    modulated by lambda (adaptive LayerNorm: GELU of the embedding, then a dense scale and shift)."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.depthwise = tf.keras.layers.DepthwiseConv2D(CONVNEXT_KERNEL, padding="same")
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, center=False, scale=False)
        self.modulation = Modulation(width, activation=tf.nn.gelu)
        self.mlp = tf.keras.Sequential([tf.keras.layers.Dense(CONVNEXT_MLP_RATIO * width, tf.nn.gelu),
                                        tf.keras.layers.Dense(width)])
        self.gamma = self.add_weight(name="gamma", shape=[width],
                                     initializer=tf.keras.initializers.Constant(CONVNEXT_LAYER_SCALE))

    def call(self, x, embedding):
        return x + self.gamma * self.mlp(self.modulation(self.norm(self.depthwise(x)), embedding))


class ConvNeXtLatent(tf.keras.layers.Layer):
    """One latent block of the top-down path: p(z | t) from t, q(z | t, h) from t and the encoder's features h
    at the same scale, both Gaussian (means squashed by linear_sqrt, scales by std_smooth), KL analytic;
    t <- block(t + conv1x1(z))."""

    def __init__(self, width, channels, **kwargs):
        super().__init__(**kwargs)
        self.front, self.end = ConvNeXtBlock(width, name="front"), ConvNeXtBlock(width, name="end")
        self.enc_block, self.td_block, self.merged_block = (ConvNeXtBlock(width, name=n)
                                                            for n in ("enc_block", "td_block", "merged_block"))
        self.merge = tf.keras.layers.Conv2D(width, 1)
        self.posterior = tf.keras.layers.Conv2D(2 * channels, 3, padding="same")
        self.prior = tf.keras.layers.Conv2D(2 * channels, 1)
        self.z_proj = tf.keras.layers.Conv2D(width, 1)

    @staticmethod
    def gaussian(params):
        loc, raw = tf.split(params, 2, axis=-1)
        return linear_sqrt(loc), std_smooth(raw)

    def call(self, t, h, embedding):
        """(updated t, KL per image in nats)."""
        t = self.front(t, embedding)
        p_loc, p_scale = self.gaussian(self.prior(t))
        merged = self.merge(tf.concat([self.td_block(t, embedding), self.enc_block(h, embedding)], axis=-1))
        q_loc, q_scale = self.gaussian(self.posterior(self.merged_block(merged, embedding)))
        z = sample_normal(q_loc, q_scale)
        return self.end(t + self.z_proj(z), embedding), per_image(normal_kl(q_loc, q_scale, p_loc, p_scale))


class ConvNeXtVAE(HierarchicalVAE):
    """The variable-rate seed's hierarchy (its `rd_model_base` at the default flags). Scales s = 0..S-1 bottom-up
    have width W_s (--widths) and stride 4 * 2^s.

        encoder:  x -> patch down x4 -> [E_0 ConvNeXt blocks] -> h_0 -> block, patch down x2 to W_1 -> [E_1 blocks]
                  -> h_1 -> ... -> h_{S-1}   (--enc_blocks E_s)
        decoder:  t = a learned constant of width W_{S-1} at the top scale; at each scale s from the top,
                  N_s latent blocks (--latent_blocks) of C_s channels (--latent_channels) with h_s, then a patch up
                  x2 to W_{s-1} (at s = 0: x4 to the image channels); x_hat = (t + 1) * 127.5.

    Every block is modulated by lambda. The top latent's prior comes from the constant: there is no factorized
    top level, so every KL is analytic."""

    def __init__(self, lmbda, widths, enc_blocks, latent_blocks, latent_channels, lmb_range, image_channels=3):
        scales = len(widths)
        super().__init__(lmbda, image_channels, lmb_range, 4 * 2 ** (scales - 1),
                         LambdaEmbedding(lmb_range, *CONVNEXT_EMBEDDING, name="lambda_embedding"))
        self.levels = sum(latent_blocks)
        self.stem = patch_down(widths[0], 4)
        self.encoder = [[ConvNeXtBlock(w, name=f"encoder{s}_{i}") for i in range(enc_blocks[s])]
                        for s, w in enumerate(widths)]
        self.down = [(ConvNeXtBlock(widths[s], name=f"down{s}_block"), patch_down(widths[s + 1], 2))
                     for s in range(scales - 1)]
        self.top = self.add_weight(name="top", shape=[widths[-1]], initializer="zeros")
        self.latents = [[ConvNeXtLatent(widths[s], latent_channels[s], name=f"latent{s}_{i}")
                         for i in range(latent_blocks[s])] for s in range(scales)]
        self.up = [PatchUp(image_channels, 4, name="up0")]
        self.up += [PatchUp(widths[s - 1], 2, name=f"up{s}") for s in range(1, scales)]

    def preprocess(self, x):
        mean, scale = CONVNEXT_INPUT
        return (x / 255.0 - mean) * scale

    def reconstruction(self, out):
        return (out + 1.0) * 127.5

    def forward(self, x, lmbda=None):
        """As ResNetVAE.forward; KLs [batch, levels] in bottom-up order (per latent block)."""
        shape = tf.shape(x)
        emb = self.embedding(lmbda)
        h = self.stem(self.padded_input(x))
        features = []
        for s, blocks in enumerate(self.encoder):
            if s > 0:
                block, down = self.down[s - 1]
                h = down(block(h, emb))
            for block in blocks:
                h = block(h, emb)
            features.append(h)
        top = tf.shape(features[-1])
        t = tf.broadcast_to(self.top, top)
        kls = []
        for s in reversed(range(len(features))):
            for latent in self.latents[s]:
                t, kl = latent(t, features[s], emb)
                kls.append(kl)
            t = self.up[s](t)
        out = t[:, :shape[1], :shape[2], :]
        return out, tf.stack(kls[::-1], axis=1)


def check_channels(model, dataset):
    """Refuses a dataset whose images have other channels than the model takes (the MNIST sets are grey levels,
    every other set is read as RGB)."""
    channels = 1 if dataset in mnist.NAMED else 3
    if channels != model.image_channels:
        raise InputError(f"--dataset {dataset} has {channels}-channel images but the model takes "
                         f"{model.image_channels} (--image_channels)")


def build_weighted(args, flags):
    """The model of `flags`, its weights created under the strategy of the command line `args`."""
    with training.strategy_scope(args):
        model = build(flags)
        model.build_weights()
    return model


def open_hvae(args, run_dir):
    """(model, checkpoint, identity) of the trained run of resnet_vae.py in `run_dir`, opened by
    training.open_run (the model built from the run's flags)."""
    return training.open_run(args, run_dir, lambda flags: build_weighted(args, flags), "resnet_vae", model_flags)


def build(args):
    flags = model_flags(args)
    if flags.pop("arch", "resnet") == "convnext":
        return ConvNeXtVAE(args.lmbda, **flags)
    model_class = DLogisticResNetVAE if flags.pop("likelihood", "mse") == "dlogistic" else ResNetVAE
    return model_class(args.lmbda, **flags)
