"""rdub_mlp.py's densities: every prior's log p(y) and every posterior's log q(y|x) is a normalized density (the
posterior's, of its own samples), and the rate the model reports is E_q[log q - log p] in the flags' units.

A log-density that does not integrate to one, or a sign slip in log q - log p, would put the "upper bound" below
R(D) with no other symptom. The weights are random: drawn with a fixed seed, then perturbed as an optimizer step
would (kept inside their constraints, i.e. the MADEs' autoregressive masks), so that no identity or symmetric
initialization (a 1-d MADE outputs exactly 0 at init, gmm_1 starts at loc 0) hides a mistake.

Quadrature: the trapezoid rule in t on y = m + a sinh(t), t in [-t_max, t_max] with step dt (a tensor grid in
2-d), so nodes are dense at m and sparse in the tails. WIDE (a, t_max, dt = 3, 5, 0.06; m = 0: spacing 0.18 near
0, |y| <= 223) covers the mixtures' logistic tails. FINE (1, 4, 0.04: spacing 0.04, |y| <= 27) is for the deep
prior (narrowed to sd ~1, see built_prior) and the MAF priors: their random weights overflow float32 to NaN far
out (|y| ~ 200) and their relu MADEs put kinks in the density. POSTERIORS (0.5, 3.5, 0.02: |y - m| <= 16, m the
median of q's samples) is for q, which sits away from 0 and whose IAF also overflows far out.

Each integral is also taken on every other node (step 2 dt), and the difference is asserted < QUAD_CONVERGED =
3e-4. The rule converges at least at second order (the relu kinks; geometrically for the smooth densities), so the
fine grid's error is at most a third of that difference: < 1e-4. Measured differences: <= 2e-6 for the priors,
<= 9e-5 for the posteriors' moments. The tail mass beyond the grids is < 1e-5. So a correct density integrates to
1 within 2e-4 (measured: |I - 1| <= 1e-6 for every prior and posterior here). TOL = 1e-3 leaves 5x margin, and
the slips that matter (a missing log-det of a layer, a flipped sign, a sum over dimensions taken as a mean) move
an integral by 3% or more.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

import rdub_mlp
from utils.cli import InputError
from utils.priors import make_prior

WIDE, FINE, POSTERIORS = (3.0, 5.0, 0.06), (1.0, 4.0, 0.04), (0.5, 3.5, 0.02)
TOL = 1e-3
QUAD_CONVERGED = 3e-4
MIXTURES = ("gmm_1", "gmm_3", "gsm_3", "lmm_3", "lsm_3")
# (prior type, ar activation, perturbation scale). MAF weights move less: at 0.3 some random flows already put
# mass at |y| ~ 1e5, beyond any grid; at 0.1 every weight still moves (the 1-d MADE's constant output too).
PRIORS = [("std_gaussian", "relu", 0.0), *[(m, "relu", 0.5) for m in MIXTURES], ("deep", "relu", 0.5),
          ("maf", "relu", 0.1), ("maf", "softplus", 0.1)]  # relu: the default; softplus: the paper's banana MAF


def perturb(variables, scale, seed):
    rng = np.random.default_rng(seed)
    for v in variables:
        w = v + rng.normal(0.0, scale, v.shape).astype(np.float32)
        v.assign(v.constraint(w) if v.constraint is not None else w)


def grid(dim, spec, center=0.0):
    """(nodes [N, dim], weights [N], mask of the step-2*dt subgrid) of the sinh-mapped trapezoid rule, its finest
    spacing at `center`."""
    a, t_max, dt = spec
    t = np.arange(-t_max, t_max + dt / 2, dt)
    y, w, even = a * np.sinh(t), a * np.cosh(t) * dt, np.arange(t.size) % 2 == 0
    if dim == 1:
        return center + y[:, None], w, even
    nodes = np.stack(np.meshgrid(y, y, indexing="ij"), -1).reshape(-1, 2)
    return center + nodes, np.outer(w, w).ravel(), np.outer(even, even).ravel()


def integrate(values, dim, spec):
    """The integral of `values` (at the nodes of a grid(dim, spec)) on the fine grid, after checking it has
    converged."""
    _, w, even = grid(dim, spec)
    assert np.isfinite(values).all()
    fine, coarse = np.sum(values * w), np.sum(values[even] * w[even]) * 2 ** dim
    assert abs(fine - coarse) < QUAD_CONVERGED * max(1.0, abs(fine)), (fine, coarse)
    return fine


def built_prior(prior_type, activation, scale, dim, seed=0):
    tf.keras.utils.set_random_seed(seed)
    prior = make_prior(prior_type, dim, ar_activation=activation)
    prior.log_prob(tf.zeros([1, dim]))  # creates the variables
    if prior_type == "deep":
        # tfc starts it wide (sd ~30 here), where the unit box changes the density by only ~3e-4 (< TOL): narrow it
        # to sd ~1, as NTC training makes it, so that its noisy form differs (by up to 27%). The raw matrices start
        # at -1.79; +1.5 makes each of the 4 layers ~4x steeper.
        for v in prior.trainable_variables:
            if "matrix" in v.name:
                v.assign_add(tf.fill(v.shape, 1.5))
    perturb(prior.trainable_variables, scale, seed)
    return prior


# The MAF prior has no noisy form (refused: test_maf_prior_refuses_noisy).
CASES = [(*p, dim, noisy) for p in PRIORS for dim in (1, 2) for noisy in (False, True) if not (noisy and p[0] == "maf")]


@pytest.mark.parametrize("prior_type, activation, scale, dim, noisy", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]}d{'-noisy' if c[4] else ''}" for c in CASES])
def test_prior_integrates_to_one(prior_type, activation, scale, dim, noisy):
    prior = built_prior(prior_type, activation, scale, dim)
    spec = FINE if prior_type in ("maf", "deep") else WIDE
    nodes, _, _ = grid(dim, spec)
    log_p = prior.log_prob(tf.constant(nodes, tf.float32), noisy=noisy).numpy().astype(np.float64)
    assert abs(integrate(np.exp(log_p), dim, spec) - 1.0) < TOL
    if noisy:  # and it is the density of y + u: p averaged over the unit box at y (a normalized wrong one is not)
        u = (np.arange(100) + 0.5) / 100 - 0.5  # midpoint rule: relative error ~ (1/100)^2 / 24 * |p''/p| < 1e-4
        box = u[:, None] if dim == 1 else np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
        for y in np.array([[-2.3, 0.4], [0.4, 1.7], [1.7, -0.9]])[:, :dim]:
            average = np.mean(np.exp(prior.log_prob(tf.constant(y + box, tf.float32)).numpy().astype(np.float64)))
            noisy_p = np.exp(prior.log_prob(tf.constant(y[None], tf.float32), noisy=True).numpy()[0])
            assert noisy_p == pytest.approx(average, rel=TOL)


def test_maf_prior_refuses_noisy():
    with pytest.raises(InputError, match="not factorized"):
        built_prior("maf", "relu", 0.1, 2).log_prob(tf.zeros([1, 2]), noisy=True)


@pytest.mark.parametrize("prior_type", MIXTURES)
def test_mixture_noisy_log_prob_is_finite_in_the_tails(prior_type):
    """NTC's rate far right of a mixture: tfp computes the mixture's log survival function as log(1 - cdf), which is
    -inf in float32 a few scales out, so the noisy log-prob was -inf there and its gradient NaN, and NTC training
    with a mixture prior stopped at a NaN loss in its first epoch (the fix: utils/priors.py)."""
    prior = built_prior(prior_type, "relu", 0.5, 1)
    y = np.array([[-100.0], [-30.0], [-8.0], [8.0], [30.0], [100.0]], np.float32)
    with tf.GradientTape() as tape:
        log_p = prior.log_prob(tf.constant(y), noisy=True)
    grads = tape.gradient(log_p, prior.trainable_variables)
    lp = log_p.numpy()
    assert np.isfinite(lp).all() and all(np.isfinite(g.numpy()).all() for g in grads)
    # Beyond every component's location (|loc| < 1.3 here) p falls monotonically away from 0, so the box average
    # p_noisy(y) lies between p at the box's outer and inner ends (float32 rounding: 1e-4 relative).
    outer = prior.log_prob(tf.constant(y + 0.5 * np.sign(y))).numpy()
    inner = prior.log_prob(tf.constant(y - 0.5 * np.sign(y))).numpy()
    slack = 1e-4 * np.abs(lp) + 1e-3
    assert np.all(outer - slack <= lp) and np.all(lp <= inner + slack)
    if prior_type[1] == "s":  # zero-mean scale mixtures are symmetric
        np.testing.assert_allclose(lp, lp[::-1], rtol=1e-4)


# ---- posteriors and the rate --------------------------------------------------------------------

def built_model(tmp_path, dim, posterior, prior, *flags, seed=0):
    """The model of rdub_mlp.py's flags (latent = data dimension, one hidden encoder layer, no decoder), its weights
    random and perturbed."""
    tf.keras.utils.set_random_seed(seed)
    args = rdub_mlp.parse_args(["--dataset", "gaussian", "--data_dim", str(dim), "--posterior_type", posterior,
                                "--prior_type", prior, "--encoder_units", "8", "--decoder_units", "0",
                                "--lambda", "2", *flags, "--checkpoint_dir", str(tmp_path), "eval"])
    args.latent_dim = dim
    model = rdub_mlp.make_model(args)
    perturb(model.encoder.trainable_variables, 0.3, seed)
    perturb([v for m in model.iaf_mades for v in m.trainable_variables], 0.1, seed + 1)
    perturb(model.prior.trainable_variables, 0.1 if prior == "maf" else 0.5, seed + 2)
    return model


X = np.array([0.7, -1.2], np.float32)
N = 20000  # Monte Carlo draws: standard errors of a few thousandths


def draws(model, dim, n=N):
    """Per-sample (KL estimate, MSE) at n copies of one input."""
    kl, mse = model.per_sample(tf.constant(np.tile(X[:dim], (n, 1))))
    return kl.numpy().astype(np.float64), mse.numpy().astype(np.float64)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_posterior_is_a_normalized_density_of_its_samples(tmp_path, posterior, dim):
    model = built_model(tmp_path, dim, posterior, "std_gaussian")
    q = model.posterior(tf.constant(X[None, :dim]))
    y = tf.reshape(q.sample(N), [N, dim])
    s = y.numpy().astype(np.float64)
    nodes, _, _ = grid(dim, POSTERIORS, center=np.median(s, 0))  # q sits far from 0 (here up to |y| ~ 7)
    density = np.exp(q.log_prob(tf.constant(nodes, tf.float32)).numpy().astype(np.float64))
    assert abs(integrate(density, dim, POSTERIORS) - 1.0) < TOL
    # It is the density of q's samples: their mean and variance match the quadrature's, within 4 standard errors
    # (of a mean: sd / sqrt(n); of a variance: sqrt((m4 - var^2) / n)).
    mean_q = np.array([integrate(density * nodes[:, i], dim, POSTERIORS) for i in range(dim)])
    var_q = np.array([integrate(density * (nodes[:, i] - mean_q[i]) ** 2, dim, POSTERIORS) for i in range(dim)])
    assert np.all(np.abs(s.mean(0) - mean_q) < 4 * s.std(0) / math.sqrt(N))
    m4 = np.mean((s - s.mean(0)) ** 4, 0)
    assert np.all(np.abs(s.var(0) - var_q) < 4 * np.sqrt((m4 - s.var(0) ** 2) / N))
    if posterior == "iaf":  # the flow moves q well away from its Gaussian base
        assert np.abs(mean_q - q.distribution.mean().numpy()[0]).max() > 0.1
    # The rate uses log q at q's own samples (for the IAF, tfp's cached forward pass): the same as recomputing it.
    np.testing.assert_allclose(q.log_prob(y).numpy(), q.log_prob(tf.identity(y) + 0.0).numpy(), atol=1e-4)


UNITS = {(): 1 / math.log(2), ("--nats",): 1.0, ("--rpd",): 1 / (2 * math.log(2)), ("--nats", "--rpd"): 0.5}


@pytest.mark.parametrize("units", list(UNITS), ids=["bits", "nats", "bits-rpd", "nats-rpd"])
def test_rate_is_the_analytic_kl_in_the_flags_units(tmp_path, units):
    """Gaussian posterior and N(0, I) prior: E_q[log q - log p] is KL(N(m, s^2) || N(0, 1)) summed over the 2 latent
    dimensions, in nats; the reported rate is it times the unit's factor (1/ln 2 for bits, 1/dim with --rpd)."""
    model = built_model(tmp_path, 2, "gaussian", "std_gaussian", *units)
    q = model.posterior(tf.constant(X[None]))
    m, s = q.mean().numpy()[0].astype(np.float64), q.stddev().numpy()[0].astype(np.float64)
    kl = np.sum(0.5 * (s ** 2 + m ** 2 - 1) - np.log(s))
    assert kl > 0.3  # far from the trivial posterior q = p
    k, _ = draws(model, 2)
    stderr = k.std() / math.sqrt(N)
    assert abs(k.mean() - kl) < 4 * stderr
    assert model.rate_scale == pytest.approx(UNITS[units], rel=1e-12)
    losses = {k: float(v) for k, v in model.losses_of(tf.constant(np.tile(X, (N, 1)))).items()}
    assert abs(losses["rate"] - kl * UNITS[units]) < 4 * stderr * UNITS[units]
    assert losses["loss"] == pytest.approx(losses["rate"] + 2 * losses["mse"], rel=1e-6)


def test_iaf_rate_against_quadrature_with_a_maf_prior(tmp_path):
    """Both flows, 2-d: the rate's estimate at one x is E_q[log q - log p], by quadrature of q (log q - log p).
    Seed 2: random flows overflow float32 a few scales out (log p = -inf where q still has mass, for seeds 0 and 1;
    the MAF's log-scale is unbounded), and this one is finite on the whole grid."""
    model = built_model(tmp_path, 2, "iaf", "maf", "--nats", seed=2)
    q = model.posterior(tf.constant(X[None]))
    nodes, _, _ = grid(2, POSTERIORS, center=np.median(tf.reshape(q.sample(1000), [-1, 2]).numpy(), 0))
    y = tf.constant(nodes, tf.float32)
    log_q, log_p = q.log_prob(y).numpy().astype(np.float64), model.prior.log_prob(y).numpy().astype(np.float64)
    assert np.isfinite(log_p).all() and not np.isnan(log_q).any()
    density = np.exp(log_q)
    kl = integrate(np.where(density > 0, density * (log_q - log_p), 0.0), 2, POSTERIORS)  # q log q -> 0 where q -> 0
    assert kl > 0.3
    k, _ = draws(model, 2)
    assert abs(k.mean() - kl) < 4 * k.std() / math.sqrt(N) + TOL * abs(kl)


@pytest.mark.parametrize("dim", [1, 2])
def test_uniform_posterior_rate_is_the_noisy_prior_over_the_unit_box(tmp_path, dim):
    """y = center + U(-1/2, 1/2)^dim has density 1, so the rate is E_u[-log p_noisy(center + u)]: by the midpoint
    rule over the box (200 points per side; error ~1e-6 for this smooth integrand) against the model's draws. Noise
    of another width or offset moves the mean by 0.18 nats or more here (measured for U(0, 1) and U(-1, 1)), 4
    standard errors are ~0.01."""
    model = built_model(tmp_path, dim, "uniform", "gmm_3", "--nats")
    center = model.posterior(tf.constant(X[None, :dim])).numpy()[0]
    assert np.all(np.abs(center) > 0.2)  # off the origin, so that a shifted box would show
    u = (np.arange(200) + 0.5) / 200 - 0.5
    box = u[:, None] if dim == 1 else np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    expected = -np.mean(model.prior.log_prob(tf.constant(center + box, tf.float32), noisy=True).numpy())
    k, mse = draws(model, dim)
    assert abs(k.mean() - expected) < 4 * k.std() / math.sqrt(N)
    # No decoder: x_hat = y, so the per-sample MSE is the mean of (x - center - u)^2, u uniform on the box.
    d = X[:dim] - center
    assert abs(mse.mean() - np.mean(d ** 2 + 1 / 12)) < 4 * mse.std() / math.sqrt(N)
