"""Monte-Carlo bits-back coding of binary images (Ruan et al., ICML 2021): the engine that mcbits.py's commands run.

The model is the IWAE paper's binary VAE 784-200-200-50 (tanh; Bernoulli pixels; diagonal Gaussian posterior;
N(0, I) prior), in the released McBits checkpoints' layout (`layer_shapes`, `load_weights`). It runs twice: as
NumPy networks in float64 (`Net`) on the coding path, and as a Keras model (`make_model`) for training and for the
continuous bounds (`continuous_bounds`: the ELBO and IWAE_K per image, in nats).

Coders (`Codec`), on one LIFO ANS stack (utils/ans.py), for each image x in turn:
- bb_elbo: pop z ~ Q(z|x); push x with P(x|z); push z with P(z).
- bb_is (K): pop K particles from Q; pop the index j with probabilities proportional to the importance
  weights P(x, z_k) / Q(z_k|x); push the other K-1 particles back with Q; push j uniformly; push x, z_j.
- bb_cis (K): pop one uniform integer u per latent dimension; particle k is Q's ppf of (u + shift_k) mod 2^p
  (fixed shifts, shift_0 = 0); pop j as above; push the position of u_j inside z_j's bucket (uniform), j, x,
  z_j. It needs about p bits per latent dimension up front instead of K times Q's entropy.
Decoding runs the steps backwards and leaves the stack as it found it. With refinement (`refine_posterior`),
Q(z|x) is first improved by Adam on the image's negative ELBO, with fixed noise, identically at both ends.

Discretization (McBits' scheme): the prior is 2^log_num_bucket equal-mass buckets of N(0, 1) per latent
dimension (exactly log_num_bucket bits each), the networks see a bucketed latent at its bucket's median, Q
puts the Gaussian posterior's mass of each bucket into integer counts at prop_mprec bits, P(x|z) is a count
table per pixel at cond_mprec bits, the index j's weights are counts at index_mprec bits; every count is
at least 1. mcbits.py's --prop_mprec defaults to 20 rather than McBits' 16: with 256 buckets of at least one count
each, 16 bits give every bucket of a sharp posterior 1/65536 of the mass, so about 0.4% of the draws per dimension
land anywhere in the prior, which costs ~3% of the rate (docs/mcbits.md). The coding path runs the networks in
NumPy, one image (or its K particles) per call, identically at encoding and decoding: a bit-identical table on
both sides is what makes decoding exact.

TensorFlow is imported only inside `make_model` and `continuous_bounds`: decoding (NumPy and constriction) never
loads it. The coding path's speed also depends on BLAS running single-threaded, which mcbits.py arranges before
NumPy loads (OPENBLAS_NUM_THREADS=1).
"""
import math

import numpy as np

from utils import ans, mnist
from utils.cli import InputError
from utils.sources import resolve_path

DIM = mnist.DIM
BITS = DIM * math.log(2.0)  # nats per image -> bits per dimension
CODERS = ("bb_elbo", "bb_is", "bb_cis")
LAYERS = ("enc_fc1", "enc_fc2", "enc_fc31", "enc_fc32", "dec_fc1", "dec_fc2", "dec_fc3")
ADAM_EPSILON = 1e-4  # the McBits / IWAE training setting
SHIFT_SEED = 0  # BB-CIS's particle shifts: fixed, so that the decoder knows them
REFINE_SEED = 1  # the fixed noise of iterative posterior improvement


# ---- weights ------------------------------------------------------------------------------------

def layer_shapes(hidden, latent):
    """[in, out] of each layer of the 784-H-H-L binary VAE, in the released checkpoints' layout."""
    return {"enc_fc1": (DIM, hidden), "enc_fc2": (hidden, hidden), "enc_fc31": (hidden, latent),
            "enc_fc32": (hidden, latent), "dec_fc1": (latent, hidden), "dec_fc2": (hidden, hidden),
            "dec_fc3": (hidden, DIM)}


def load_weights(path, hidden, latent):
    """The arrays {name_w, name_b} of a weights .npz, checked against the architecture flags."""
    p = resolve_path(path, "--weights")  # a data/... path is also looked up under $RDS_DATA_DIR
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k.endswith(("_w", "_b"))}
    except Exception as e:
        raise InputError(f"--weights: cannot read {p} as .npz: {e}")
    for name, (n_in, n_out) in layer_shapes(hidden, latent).items():
        for key, shape in ((f"{name}_w", (n_in, n_out)), (f"{name}_b", (n_out,))):
            if key not in arrays:
                raise InputError(f"--weights: {p} has no array {key!r}; expected the McBits layout "
                                 "(see docs/mcbits.md)")
            if arrays[key].shape != shape:
                raise InputError(f"--weights: {p} holds {key} of shape {arrays[key].shape}, but --hidden_units "
                                 f"{hidden} --latent_dim {latent} need {shape}")
            if not np.isfinite(arrays[key]).all():
                raise InputError(f"--weights: {p}: {key} holds NaN or inf")
    return {k: arrays[k].astype(np.float32) for k in sorted(arrays)}


class Net:
    """The VAE's networks in NumPy (float64) for the coding path: same shapes in, same bits out."""

    def __init__(self, arrays):
        a = {k: v.astype(np.float64) for k, v in arrays.items()}
        self.a = a
        self.latent = a["enc_fc31_w"].shape[1]

    def encode(self, x):
        """Posterior mean and log std [n, L] of binary images [n, 784]."""
        a = self.a
        h = np.tanh(x @ a["enc_fc1_w"] + a["enc_fc1_b"])
        h = np.tanh(h @ a["enc_fc2_w"] + a["enc_fc2_b"])
        return h @ a["enc_fc31_w"] + a["enc_fc31_b"], h @ a["enc_fc32_w"] + a["enc_fc32_b"]

    def hidden(self, z):
        a = self.a
        g1 = np.tanh(z @ a["dec_fc1_w"] + a["dec_fc1_b"])
        return g1, np.tanh(g1 @ a["dec_fc2_w"] + a["dec_fc2_b"])

    def logits(self, z):
        return self.hidden(z)[1] @ self.a["dec_fc3_w"] + self.a["dec_fc3_b"]


def refine_posterior(net, x, mu, log_sig, noise, lr):
    """Iterative posterior improvement: Adam on the negative ELBO of one image w.r.t. (mu, log_sig), one step
    per row of `noise` [steps, S, L] (fixed reparameterization noise, so the decoder repeats it exactly)."""
    a = net.a
    x = x.astype(np.float64)
    params = np.stack([mu, log_sig])  # [2, L]
    m, v = np.zeros_like(params), np.zeros_like(params)
    for t, eps in enumerate(noise, 1):
        mu, log_sig = params
        sig = np.exp(log_sig)
        z = mu + sig * eps
        g1, g2 = net.hidden(z)
        d_logits = 1.0 / (1.0 + np.exp(-(g2 @ a["dec_fc3_w"] + a["dec_fc3_b"]))) - x  # d(-log p(x|z))/d logits
        d_a2 = (d_logits @ a["dec_fc3_w"].T) * (1.0 - g2 ** 2)
        d_a1 = (d_a2 @ a["dec_fc2_w"].T) * (1.0 - g1 ** 2)
        d_z = d_a1 @ a["dec_fc1_w"].T
        # the analytic KL(q || N(0, I)) adds mu and sig^2 - 1
        grad = np.stack([d_z.mean(0) + mu, (d_z * eps).mean(0) * sig + sig ** 2 - 1.0])
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad ** 2
        params = params - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return params[0], params[1]


# ---- the coders ---------------------------------------------------------------------------------

class Codec:
    """One of CODERS with its discretization; `encode`/`decode` one image on a shared ans.Stack."""

    def __init__(self, net, coder, num_particles=1, log_num_bucket=8, prop_mprec=20, cond_mprec=16,
                 index_mprec=16, refine_steps=0, refine_lr=1e-3, refine_samples=1):
        self.net, self.coder, self.k = net, coder, num_particles if coder != "bb_elbo" else 1
        self.latent = net.latent
        self.buckets, self.prop_mprec = log_num_bucket, prop_mprec
        self.cond_mprec, self.index_mprec = cond_mprec, index_mprec
        self.edges, self.centres = ans.standard_normal_buckets(log_num_bucket)
        self.prior = ans.uniform_table(self.latent, log_num_bucket)
        self.refine_lr = refine_lr
        self.noise = (np.random.default_rng(REFINE_SEED).standard_normal((refine_steps, refine_samples, self.latent))
                      if refine_steps else None)
        if coder == "bb_cis":
            self.shifts = np.random.default_rng(SHIFT_SEED).integers(0, 1 << prop_mprec, size=(self.k, self.latent))
            self.shifts[0] = 0

    def posterior(self, x):
        """Mean and log std [L] of Q(z|x), refined when asked (the same computation at both ends)."""
        mu, log_sig = self.net.encode(x[None].astype(np.float64))
        mu, log_sig = mu[0], log_sig[0]
        if self.noise is not None:
            mu, log_sig = refine_posterior(self.net, x, mu, log_sig, self.noise, self.refine_lr)
        return mu, log_sig

    def proposal(self, posterior):
        mu, log_sig = posterior
        return ans.gaussian_table(mu, np.exp(log_sig), self.edges, self.prop_mprec)

    def likelihood(self, z):
        """P(x|z) tables, one per row of bucket indices z [m, L]: [m * 784] rows."""
        return ans.bernoulli_table(self.net.logits(self.centres[z]), self.cond_mprec)

    def index_weights(self, x, zs, q):
        """The normalized importance-weight table of particles zs [K, L] (discretized log-weights, in bits)."""
        lik_bits = ans.bernoulli_info(self.net.logits(self.centres[zs]), x, self.cond_mprec).sum(1)
        q_bits = q.info(zs).sum(1)
        log2_w = q_bits - lik_bits - self.latent * self.buckets
        return ans.categorical_table(np.exp2(log2_w - log2_w.max()), self.index_mprec)

    def max_pop_bits(self):
        """An upper bound on the bits one image pops before it pushes (constriction's requantization of a
        count of 1 out of 2^p can cost a little over p bits, hence the + 1 per symbol)."""
        index = self.index_mprec + 1 if self.k > 1 else 0
        if self.coder == "bb_cis":
            return self.latent * self.prop_mprec + index
        return self.k * self.latent * (self.prop_mprec + 1) + index

    def encode(self, stack, x, posterior):
        """Codes x; returns the stack's size after the pops, its low point during this image."""
        q = self.proposal(posterior)
        stack.require(self.max_pop_bits())
        if self.coder == "bb_elbo":
            z = stack.pop(q)
            low = stack.bits
        else:
            if self.coder == "bb_is":
                zs = stack.pop(q.tile(self.k)).reshape(self.k, self.latent)
            else:
                u = stack.pop_uniform(np.full(self.latent, 1 << self.prop_mprec))
                us = (u + self.shifts) % (1 << self.prop_mprec)
                zs = q.ppf(us)
            j = int(stack.pop(self.index_weights(x, zs, q))[0]) if self.k > 1 else 0
            low = stack.bits
            z = zs[j]
            if self.coder == "bb_is":
                stack.push(np.delete(zs, j, axis=0).ravel(), q.tile(self.k - 1))
            else:
                stack.push_uniform(us[j] - q.cdf(z), q.count(z))
            if self.k > 1:
                stack.push_uniform([j], [self.k])
        stack.push(x, self.likelihood(z[None]))
        stack.push(z, self.prior)
        return low

    def decode(self, stack):
        z = stack.pop(self.prior)
        x = stack.pop(self.likelihood(z[None]))
        posterior = self.posterior(x)
        q = self.proposal(posterior)
        if self.coder == "bb_elbo":
            stack.push(z, q)
            return x, posterior
        j = int(stack.pop_uniform([self.k])[0]) if self.k > 1 else 0
        if self.coder == "bb_is":
            others = stack.pop(q.tile(self.k - 1)).reshape(self.k - 1, self.latent)
            zs = np.insert(others, j, z, axis=0)
        else:
            u_j = q.cdf(z) + stack.pop_uniform(q.count(z))
            u = (u_j - self.shifts[j]) % (1 << self.prop_mprec)
            us = (u + self.shifts) % (1 << self.prop_mprec)
            zs = q.ppf(us)
        if self.k > 1:
            stack.push([j], self.index_weights(x, zs, q))
        if self.coder == "bb_is":
            stack.push(zs.ravel(), q.tile(self.k))
        else:
            stack.push_uniform(u, np.full(self.latent, 1 << self.prop_mprec))
        return x, posterior



# ---- the TensorFlow model: training and the continuous bounds ------------------------------------

def make_model(hidden, latent, bound="elbo", num_particles=1, arrays=None):
    """The binary VAE as a Keras model (built; weights from `arrays` when given)."""
    import tensorflow as tf
    from utils import training

    class BinaryVAE(training.LossModel):
        METRICS = ("loss", "bpd")

        def __init__(self):
            super().__init__()
            dense = tf.keras.layers.Dense
            self.layer = {name: dense(n_out, activation="tanh" if name in ("enc_fc1", "enc_fc2", "dec_fc1", "dec_fc2")
                                      else None, name=name)
                          for name, (_, n_out) in layer_shapes(hidden, latent).items()}

        def compile(self, optimizer=None, **kwargs):
            # utils.training builds Adam with Keras' default epsilon; McBits trains with 1e-4
            if isinstance(optimizer, tf.keras.optimizers.Adam):
                optimizer.epsilon = ADAM_EPSILON
            super().compile(optimizer=optimizer, **kwargs)

        def posterior(self, x):
            h = self.layer["enc_fc2"](self.layer["enc_fc1"](x))
            return self.layer["enc_fc31"](h), self.layer["enc_fc32"](h)

        def logits(self, z):
            return self.layer["dec_fc3"](self.layer["dec_fc2"](self.layer["dec_fc1"](z)))

        def log_weights(self, x, mu, log_sig, k):
            """log p(x, z_i) - log q(z_i|x) [k, n] for k draws z_i ~ q (nats)."""
            eps = tf.random.normal(tf.concat([[k], tf.shape(mu)], 0))
            z = mu + tf.exp(log_sig) * eps
            logits = self.logits(z)
            log_lik = tf.reduce_sum(x * logits - tf.nn.softplus(logits), -1)
            # log p(z) - log q(z|x): the 0.5 log(2 pi) terms cancel
            return log_lik + tf.reduce_sum(-0.5 * z ** 2 + 0.5 * eps ** 2 + log_sig, -1)

        def call(self, x):
            return self.logits(self.posterior(x)[0])

        def losses_of(self, x, training):
            x = tf.cast(x, tf.float32)
            lw = self.log_weights(x, *self.posterior(x), num_particles)
            b = (tf.reduce_mean(lw, 0) if bound == "elbo"
                 else tf.reduce_logsumexp(lw, 0) - math.log(num_particles))
            loss = -tf.reduce_mean(b)
            return {"loss": loss, "bpd": loss / BITS}

    model = BinaryVAE()
    model(tf.zeros([1, DIM]))
    if arrays is not None:
        for name, layer in model.layer.items():
            layer.set_weights([arrays[f"{name}_w"], arrays[f"{name}_b"]])
    return model


def model_arrays(model):
    out = {}
    for name, layer in model.layer.items():
        w, b = layer.get_weights()
        out[f"{name}_w"], out[f"{name}_b"] = w.astype(np.float32), b.astype(np.float32)
    return out


def continuous_bounds(model, x, mu, log_sig, k, samples, seed, batch=100):
    """Per-image ELBO (mean over `samples` draws) and IWAE_k (mean over samples // k groups) in nats."""
    import tensorflow as tf
    tf.random.set_seed(seed)
    reps = max(1, samples // k)

    @tf.function
    def bounds(xb, mb, sb):
        lw = model.log_weights(xb, mb, sb, reps * k)  # [reps * k, n]
        grouped = tf.reshape(lw, [reps, k, -1])
        return tf.reduce_mean(lw, 0), tf.reduce_mean(tf.reduce_logsumexp(grouped, 1) - math.log(k), 0)

    elbo, iwae = [], []
    for i in range(0, len(x), batch):
        e, w = bounds(tf.constant(x[i:i + batch], tf.float32), tf.constant(mu[i:i + batch], tf.float32),
                      tf.constant(log_sig[i:i + batch], tf.float32))
        elbo.append(e.numpy())
        iwae.append(w.numpy())
    return np.concatenate(elbo).astype(np.float64), np.concatenate(iwae).astype(np.float64)
