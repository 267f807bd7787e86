"""Lossless compression of binary images with bits-back coding and importance sampling (BB-ELBO, BB-IS, BB-CIS).

Monte-Carlo bits-back coding (Ruan et al., ICML 2021) turns a latent-variable model into a lossless codec whose
net rate approaches the model's importance-weighted bound (-IWAE_K) instead of its -ELBO. The model is the
IWAE paper's binary VAE 784-200-200-50 (tanh; Bernoulli pixels; diagonal Gaussian posterior; N(0, I) prior),
trained here (`train`) or loaded from the released McBits checkpoints (`--weights FILE.npz`).

    python mcbits.py --dataset mnist train --bound iwae --num_particles 5 --epochs 20
    python mcbits.py --weights data/mcbits/train_bin_emnist_split=mnist_num=50.npz \\
        compress --coder bb_is --num_particles 50 --num_compress 10000 --output test.mcb
    python mcbits.py --weights W.npz decompress test.mcb --output decoded.npy

Coders, on one LIFO ANS stack (utils/ans.py), for each image x in turn:
- bb_elbo: pop z ~ Q(z|x); push x with P(x|z); push z with P(z).
- bb_is (K): pop K particles from Q; pop the index j with probabilities proportional to the importance
  weights P(x, z_k) / Q(z_k|x); push the other K-1 particles back with Q; push j uniformly; push x, z_j.
- bb_cis (K): pop one uniform integer u per latent dimension; particle k is Q's ppf of (u + shift_k) mod 2^p
  (fixed shifts, shift_0 = 0); pop j as above; push the position of u_j inside z_j's bucket (uniform), j, x,
  z_j. It needs about p bits per latent dimension up front instead of K times Q's entropy.
Decoding runs the steps backwards and leaves the stack as it found it.

Discretization (McBits' scheme): the prior is 2^log_num_bucket equal-mass buckets of N(0, 1) per latent
dimension (exactly log_num_bucket bits each), the networks see a bucketed latent at its bucket's median, Q
puts the Gaussian posterior's mass of each bucket into integer counts at --prop_mprec bits, P(x|z) is a count
table per pixel at --cond_mprec bits, the index j's weights are counts at --index_mprec bits; every count is
at least 1. --prop_mprec defaults to 20 rather than McBits' 16: with 256 buckets of at least one count each,
16 bits give every bucket of a sharp posterior 1/65536 of the mass, so about 0.4% of the draws per dimension
land anywhere in the prior, which costs ~3% of the rate (docs/mcbits.md). The coding path runs the networks in
NumPy, one image (or its K particles) per call, identically at encoding and decoding: a bit-identical table on
both sides is what makes decoding exact.

Rates, in bits per dimension (784 per image): `net_bpd` is the growth of the stack over the initial bits,
`total_bpd` the whole message (initial bits included), `ideal_bpd` the continuous bound of the same model on
the same images (-ELBO for bb_elbo, -IWAE_K otherwise; Monte Carlo), `disc_bpd` the information content of all
pushes minus pops under our count tables (what net_bpd should equal, up to constriction's 24-bit requantization).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# The coding path is thousands of tiny matrix products; BLAS threads only add synchronization to them
# (5-10x slower on a busy machine). Set before NumPy loads; TensorFlow's own threads are unaffected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from utils import ans, cli, container, jsonl, mnist, runs, train_flags  # noqa: E402
from utils.cli import InputError, positive_float, positive_int, run  # noqa: E402
from utils.sources import resolve_path  # noqa: E402

DIM = mnist.DIM
BITS = DIM * math.log(2.0)  # nats per image -> bits per dimension
CODERS = ("bb_elbo", "bb_is", "bb_cis")
LAYERS = ("enc_fc1", "enc_fc2", "enc_fc31", "enc_fc32", "dec_fc1", "dec_fc2", "dec_fc3")
ADAM_EPSILON = 1e-4  # the McBits / IWAE training setting
SHIFT_SEED = 0  # BB-CIS's particle shifts: fixed, so that the decoder knows them
REFINE_SEED = 1  # the fixed noise of iterative posterior improvement
RESULTS_NAME = "mcbits.jsonl"
UNITS = "rates in bits per dimension (784 per image); speeds in images per second"


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


def codec_from_flags(net, args):
    return Codec(net, args.coder, args.num_particles, args.log_num_bucket, args.prop_mprec, args.cond_mprec,
                 args.index_mprec, args.iterative_improvement_steps if args.iterative_post_improvement else 0,
                 args.iterative_improvement_lr)


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


# ---- flags --------------------------------------------------------------------------------------

def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("-V", "--verbose", action="store_true", help="progress and messages on stderr")
    p.add_argument("--dataset", default="mnist", help=f"{', '.join(mnist.NAMED)} (IDX files under $RDS_DATA_DIR), "
                   "or an .npy of binary images uint8 [N, 28, 28] or [N, 784] (compress only)")
    p.add_argument("--hidden_units", type=positive_int, default=200, help="units of each of the two hidden layers")
    p.add_argument("--latent_dim", type=positive_int, default=50, help="latent dimensions")
    p.add_argument("--weights", help="an .npz of weights in the McBits layout (compress, decompress)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds training, the initial bits and the Monte Carlo draws")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the VAE; writes <run folder>/weights.npz",
                       description="Train the VAE; writes <run folder>/weights.npz.")
    t.add_argument("--bound", choices=("elbo", "iwae"), default="elbo", help="the training objective")
    t.add_argument("--num_particles", type=positive_int, default=1, help="K of the bound")
    t.add_argument("--checkpoint_dir", default="checkpoints", help="run folders go under here")
    t.add_argument("--epochs", type=positive_int, default=100, help="training epochs")
    t.add_argument("--steps_per_epoch", type=positive_int, default=3000,
                   help="optimizer steps per epoch (the default, 60,000 / 20, is one pass over MNIST)")
    t.add_argument("--batchsize", type=positive_int, default=20, help="images per optimizer step")
    t.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (Adam)")
    t.add_argument("--lr_schedule", default="constant",
                   help=f"learning-rate schedule: {', '.join(train_flags.SCHEDULES)}")
    t.add_argument("--max_validation_steps", type=positive_int, default=2, help="batches of 500 test images")
    t.add_argument("--cont", action="store_true", help="resume the run's latest checkpoint")
    train_flags.add_run_flags(t)

    for name, help_ in (("compress", "code test images into one message; report net, total and ideal rates"),
                        ("decompress", "decode a message file into images")):
        c = sub.add_parser(name, help=help_, description=f"{help_[0].upper()}{help_[1:]}.")
        if name == "compress":
            c.add_argument("--coder", choices=CODERS, default="bb_elbo",
                           help="bb_elbo: bits-back with one posterior draw; bb_is: importance sampling over "
                                "--num_particles; bb_cis: coupled importance sampling (each is described in "
                                "mcbits.py --help)")
            c.add_argument("--num_particles", type=positive_int, default=1, help="K of bb_is and bb_cis")
            c.add_argument("--num_compress", type=positive_int, default=500, help="test images coded")
            c.add_argument("--log_num_bucket", type=positive_int, default=8,
                           help="bits per latent dimension: the prior's 2^log_num_bucket equal-mass buckets")
            c.add_argument("--prop_mprec", type=positive_int, default=20,
                           help="bits of the posterior's counts (McBits: 16, which costs ~3%%, see docs/mcbits.md)")
            c.add_argument("--cond_mprec", type=positive_int, default=16, help="bits of the likelihood's counts")
            c.add_argument("--index_mprec", type=positive_int, default=16, help="bits of the index j's counts")
            c.add_argument("--iterative_post_improvement", action="store_true",
                           help="refine each image's posterior by Adam on its negative ELBO before coding (the "
                                "decoder repeats it)")
            c.add_argument("--iterative_improvement_steps", type=positive_int, default=50,
                           help="Adam steps of --iterative_post_improvement")
            c.add_argument("--iterative_improvement_lr", type=positive_float, default=1e-3,
                           help="their learning rate")
            c.add_argument("--ideal_samples", type=positive_int, default=100,
                           help="posterior draws per image for the ideal bound (at least K)")
            c.add_argument("--decode_check", default=True, action=argparse.BooleanOptionalAction,
                           help="decode the message again and check it against the images")
            c.add_argument("--results_dir", default="results", help="where the records and the per-image .npz go")
            c.add_argument("--output", help="also write the message to this file")
        else:
            c.add_argument("message", help="a file written by compress --output")
            c.add_argument("--output", required=True, help="decoded images, .npy uint8 [N, 28, 28]")
        cli.add_force_flag(c)
    args = p.parse_args(argv)
    check_files(args)
    if args.command == "compress":
        check_coding_flags(args)
    return args


def check_files(args):
    """Refuses, before any work, the paths a command cannot read or write."""
    if args.command == "train":
        cli.output_dir(args.checkpoint_dir, "--checkpoint_dir")
        return
    if args.weights:
        cli.input_file(resolve_path(args.weights, "--weights"), "--weights")
    if args.command == "compress":
        results = cli.output_dir(args.results_dir, "--results_dir")
        if (results / RESULTS_NAME).is_dir():
            raise InputError(f"--results_dir {results}: {results / RESULTS_NAME} is a folder, where a file is written")
    else:
        cli.input_file(args.message, "message")
    if args.output:
        cli.output_file(args.output, "--output", force=args.force)


def check_coding_flags(args):
    if args.coder == "bb_elbo" and args.num_particles != 1:
        raise InputError(f"--num_particles {args.num_particles}: bb_elbo uses one particle (choose bb_is or bb_cis)")
    if not 1 <= args.log_num_bucket <= 12:
        raise InputError(f"--log_num_bucket {args.log_num_bucket}: must be 1..12")
    for flag in ("prop_mprec", "cond_mprec", "index_mprec"):
        if getattr(args, flag) > ans.MAX_PRECISION:
            raise InputError(f"--{flag} {getattr(args, flag)}: at most {ans.MAX_PRECISION} bits")
    if args.prop_mprec <= args.log_num_bucket:
        raise InputError(f"--prop_mprec {args.prop_mprec} must exceed --log_num_bucket {args.log_num_bucket}")
    if args.num_particles >= 1 << args.index_mprec:
        raise InputError(f"--num_particles {args.num_particles} needs --index_mprec above {args.index_mprec}")
    if args.num_particles >= 1 << 24:
        raise InputError(f"--num_particles {args.num_particles}: at most 2^24 - 1")


def coding_params(args):
    """What the decoder must know besides the weights; stored in the message."""
    keys = ("coder", "num_particles", "log_num_bucket", "prop_mprec", "cond_mprec", "index_mprec",
            "iterative_post_improvement", "iterative_improvement_steps", "iterative_improvement_lr")
    return {k: getattr(args, k) for k in keys}


def model_identity(args, arrays):
    return container.model_id("mcbits", {"hidden_units": args.hidden_units, "latent_dim": args.latent_dim},
                           [arrays[k] for k in sorted(arrays)])


def need_weights(args):
    if not args.weights:
        raise InputError(f"{args.command} needs --weights FILE.npz (train writes <run folder>/weights.npz)")
    return load_weights(args.weights, args.hidden_units, args.latent_dim)


def progress(total, verbose, label):
    if not verbose:
        return None
    import tensorflow as tf
    print(label, file=sys.stderr)
    return tf.keras.utils.Progbar(total, stateful_metrics=["net_bpd"])


# ---- train --------------------------------------------------------------------------------------

def train(args):
    import tensorflow as tf
    from utils import training
    if args.dataset not in mnist.NAMED:
        raise InputError(f"--dataset {args.dataset}: training needs grey levels, one of {', '.join(mnist.NAMED)}")
    run_dir = Path(args.checkpoint_dir) / runs.run_name("mcbits", dataset=args.dataset, bound=args.bound,
                                                         num_particles=args.num_particles, hidden=args.hidden_units,
                                                         latent=args.latent_dim)
    training.check_run_dir(run_dir, args.cont)
    training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    greys = mnist.greys(args.dataset, "train")
    test = mnist.test_images(args.dataset)
    tf.random.set_seed(args.seed)
    with training.strategy_scope(args):
        model = make_model(args.hidden_units, args.latent_dim, args.bound, args.num_particles)
        mean = np.clip(greys.mean(0), 1e-3, 1 - 1e-3)  # dec_fc3's bias starts at the logit of the training mean
        w, _ = model.layer["dec_fc3"].get_weights()
        model.layer["dec_fc3"].set_weights([w, np.log(mean / (1 - mean)).astype(np.float32)])

    def binarize(g):  # dynamic binarization: a fresh Bernoulli draw each time an image is used
        return tf.cast(tf.random.uniform(tf.shape(g)) < g, tf.float32)

    train_ds = (tf.data.Dataset.from_tensor_slices(greys).shuffle(len(greys), seed=args.seed).repeat()
                .batch(args.batchsize).map(binarize))
    val_ds = tf.data.Dataset.from_tensor_slices(test.astype(np.float32)).batch(500)
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.save_flags(run_dir, args)
    if args.verbose:
        print(f"run folder: {run_dir}", file=sys.stderr)
    training.fit(model, train_ds, val_ds, run_dir, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                 lr=args.lr, lr_schedule=args.lr_schedule, max_validation_steps=args.max_validation_steps,
                 cont=args.cont, verbose=args.verbose, tensorboard=args.tensorboard)
    runs.atomic_save_npz(run_dir / "weights.npz", **model_arrays(model))
    print(json.dumps({"run_dir": str(run_dir), "weights": str(run_dir / "weights.npz")}))


# ---- compress / decompress ----------------------------------------------------------------------

def compress(args):
    arrays = need_weights(args)
    x = mnist.test_images(args.dataset, args.num_compress)
    if len(x) < args.num_compress:
        print(f"note: {args.dataset} has {len(x)} test images; coding all of them", file=sys.stderr)
    codec = codec_from_flags(Net(arrays), args)
    n = len(x)

    start = time.perf_counter()
    posteriors = [codec.posterior(xi) for xi in x]
    stack = ans.Stack.seeded(codec.max_pop_bits() + 64, args.seed)
    initial_words, initial_bits = stack.words(), stack.bits
    per_image, lowest = np.zeros(n), initial_bits
    bar = progress(n, args.verbose, f"encoding {n} images with {args.coder}")
    for i in range(n):
        before = stack.bits
        lowest = min(lowest, codec.encode(stack, x[i], posteriors[i]))
        per_image[i] = stack.bits - before
        if bar:
            bar.update(i + 1, [("net_bpd", (stack.bits - initial_bits) / ((i + 1) * DIM))])
    encode_s = time.perf_counter() - start
    words, total_bits, disc_bits = stack.words(), stack.bits, stack.info_bits

    decode_s = None
    if args.decode_check:
        start = time.perf_counter()
        decoder = ans.Stack(words)
        bar = progress(n, args.verbose, "decoding")
        for i in reversed(range(n)):
            xi, _ = codec.decode(decoder)
            if not np.array_equal(xi, x[i]):
                raise RuntimeError(f"decode check failed: image {i} differs from the input")
            if bar:
                bar.update(n - i)
        if not np.array_equal(decoder.words(), initial_words):
            raise RuntimeError("decode check failed: the stack does not return to its initial words")
        decode_s = time.perf_counter() - start

    model = make_model(args.hidden_units, args.latent_dim, arrays=arrays)
    mu, log_sig = (np.stack(p) for p in zip(*posteriors))
    samples = max(args.ideal_samples, codec.k)
    elbo, iwae = continuous_bounds(model, x, mu, log_sig, codec.k, samples, args.seed)
    ideal = -(elbo if codec.k == 1 else iwae)

    net_bits = total_bits - initial_bits
    record = {
        "coder": args.coder, "num_particles": codec.k, "num_images": n, "dataset": args.dataset,
        "weights": str(args.weights),
        "net_bpd": net_bits / (n * DIM), "total_bpd": total_bits / (n * DIM),
        "ideal_bpd": float(ideal.mean() / BITS), "ideal_se_bpd": float(ideal.std(ddof=1) / BITS / math.sqrt(n))
        if n > 1 else None,
        "disc_bpd": disc_bits / (n * DIM), "elbo_bpd": float(-elbo.mean() / BITS),
        "initial_bits": initial_bits, "initial_bits_used": initial_bits - lowest,
        "encode_images_per_s": n / encode_s, "decode_images_per_s": n / decode_s if decode_s else None,
        "decode_check": bool(args.decode_check), **coding_params(args), "units": UNITS,
    }
    record["net_over_ideal"] = record["net_bpd"] / record["ideal_bpd"] - 1.0
    # the paired standard error of net - ideal over images (each image's coding is one Monte-Carlo draw)
    record["net_minus_ideal_se_bpd"] = (float(np.std(per_image - ideal / math.log(2.0), ddof=1) / DIM / math.sqrt(n))
                                        if n > 1 else None)
    name = runs.run_name("mcbits", weights=Path(args.weights).stem, coder=args.coder, num_particles=codec.k,
                         num_compress=n, **({"refine": args.iterative_improvement_steps}
                                            if args.iterative_post_improvement else {}))
    results = Path(args.results_dir)
    if args.output:
        message = container.pack("mcbits", model_identity(args, arrays), (n, DIM), 1,
                              [json.dumps(coding_params(args), sort_keys=True).encode(), words.tobytes()])
        runs.atomic_write_bytes(args.output, message)
        record["message_bytes"] = len(message)
    runs.atomic_save_npz(results / f"{name}.npz", net_bits=per_image, ideal_bits=ideal / math.log(2.0),
                         elbo_nats=elbo, iwae_nats=iwae, initial_words=initial_words, units=UNITS)
    jsonl.append(results / RESULTS_NAME, record)
    print(json.dumps(record))


def decompress(args):
    arrays = need_weights(args)
    path = Path(args.message)
    (n, dim), _, strings = container.unpack(path.read_bytes(), "mcbits", model_identity(args, arrays),
                                         f"message {path}", "--weights, --hidden_units and --latent_dim")
    if dim != DIM or len(strings) != 2 or len(strings[1]) % 4:
        raise InputError(f"message {path}: corrupt (not a message of {DIM}-pixel images)")
    try:
        params = json.loads(strings[0])
        for k, v in params.items():
            setattr(args, k, v)
        check_coding_flags(args)
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise InputError(f"message {path}: corrupt coding parameters ({e})")
    codec = codec_from_flags(Net(arrays), args)
    stack = ans.Stack(np.frombuffer(strings[1], np.uint32))
    images = np.zeros((n, DIM), np.uint8)
    for i in reversed(range(n)):
        images[i], _ = codec.decode(stack)
    runs.atomic_write_bytes(args.output, _npy_bytes(images.reshape(n, 28, 28)))
    print(json.dumps({"images": n, "output": args.output}))


def _npy_bytes(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def main(argv):
    args = parse_args(argv)
    np.random.seed(args.seed)
    {"train": train, "compress": compress, "decompress": decompress}[args.command](args)


if __name__ == "__main__":
    run(main)
