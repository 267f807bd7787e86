"""gen_gaussian_params.py and gen_samples.py: the files they write (name, shape, dtype, range), that they follow the
distributions they promise (within stated statistical tolerances), are reproducible by seed, and refuse bad input
with one error line and exit status 2, writing nothing.

Every statistical check uses a fixed seed, so it passes or fails deterministically; its threshold says how rarely a
correct generator would fail it over seeds: 4 standard errors (two-sided 6e-5 per check), a KS p-value > 1e-3.
"""
import math

import numpy as np
import pytest
from scipy import stats

import gen_gaussian_params
import gen_samples
from conftest import run_script
from utils import cli


def gen_params(tmp_path, *argv):
    gen_gaussian_params.main(["--save_dir", str(tmp_path), *argv])


def load_params(path):
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def sample_file(tmp_path, *argv):
    gen_samples.main(["--save_dir", str(tmp_path), *argv])
    (path,) = tmp_path.glob("*.npy")
    return path, np.load(path)


def test_gaussian_params_file(tmp_path, capsys):
    gen_params(tmp_path / "new" / "dir", "--dim", "5000", "--seed", "3")  # the folder is created
    path = tmp_path / "new" / "dir" / "gaussian_params-dim=5000.npz"
    assert capsys.readouterr().out.strip() == f"wrote {path}"
    p = load_params(path)
    assert sorted(p) == ["loc", "scale", "var"]
    assert all(a.shape == (5000,) and a.dtype == np.float32 for a in p.values())
    assert p["loc"].min() >= -0.5 and p["loc"].max() <= 0.5
    assert p["var"].min() > 0 and p["var"].max() <= 2
    np.testing.assert_array_equal(p["scale"], np.sqrt(p["var"]))  # exactly: rdub_mlp.py reads 'scale' first
    # loc ~ U(-0.5, 0.5) and var ~ U(0, 2), not just inside those ranges.
    assert stats.kstest(p["loc"], stats.uniform(-0.5, 1.0).cdf).pvalue > 1e-3
    assert stats.kstest(p["var"], stats.uniform(0.0, 2.0).cdf).pvalue > 1e-3


def test_gaussian_params_are_reproducible_by_seed(tmp_path):
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6"), ("d", None)):
        gen_params(tmp_path / name, "--dim", "16", *(["--seed", seed] if seed else []))
    a, b, c, d = (load_params(tmp_path / n / "gaussian_params-dim=16.npz") for n in "abcd")
    gen_params(tmp_path / "zero", "--dim", "16", "--seed", "0")
    zero = load_params(tmp_path / "zero" / "gaussian_params-dim=16.npz")
    for k in ("loc", "var", "scale"):
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(d[k], zero[k])  # the default seed is 0
        assert not np.any(a[k] == c[k])


def test_gen_samples_of_a_gaussian_file(tmp_path, capsys):
    """The paper's Gaussian as samples: --gparams_path alone sets the dimension; the samples' means, variances and
    correlations are the file's loc, scale^2 and 0 within 4 standard errors (of a mean: scale / sqrt(n); of a
    variance: scale^2 sqrt(2 / (n - 1)); of a correlation: 1 / sqrt(n))."""
    gen_params(tmp_path, "--dim", "8", "--seed", "1")
    p = load_params(tmp_path / "gaussian_params-dim=8.npz")
    out = tmp_path / "samples"
    n = 50000
    path, x = sample_file(out, "--dataset", "gaussian", "--gparams_path", str(tmp_path / "gaussian_params-dim=8.npz"),
                          "--num_samples", str(n), "--seed", "2")
    assert path.name == f"gaussian-dim=8-samples={n}.npy" and capsys.readouterr().out.strip().endswith(str(path))
    assert x.shape == (n, 8) and x.dtype == np.float64
    loc, scale = p["loc"].astype(np.float64), p["scale"].astype(np.float64)
    assert np.all(np.abs(x.mean(0) - loc) < 4 * scale / math.sqrt(n))
    assert np.all(np.abs(x.var(0, ddof=1) - scale ** 2) < 4 * scale ** 2 * math.sqrt(2 / (n - 1)))
    corr = np.corrcoef(x, rowvar=False)[np.triu_indices(8, 1)]
    assert np.all(np.abs(corr) < 4 / math.sqrt(n))


def test_gen_samples_of_the_standard_gaussian(tmp_path):
    n = 50000
    path, x = sample_file(tmp_path, "--dataset", "gaussian", "--data_dim", "3", "--num_samples", str(n))
    assert path.name == f"gaussian-dim=3-samples={n}.npy" and x.shape == (n, 3)
    assert np.all(np.abs(x.mean(0)) < 4 / math.sqrt(n))
    assert np.all(np.abs(x.var(0, ddof=1) - 1) < 4 * math.sqrt(2 / (n - 1)))


def test_gen_samples_banana_moments(tmp_path):
    """The banana of the paper's BA command (the defaults: 2-d, 100000 samples) against its definition in
    utils/sources.py: x = R (u0, u1) - 1 with u0 = z0, u1 = z1 - 0.1 z0^2, z ~ N(0, diag(9, 0.25)), R the rotation
    rows (c, s), (-s, c) at 240 degrees. So E u = (0, -0.9), Var u0 = 9, Var u1 = 0.25 + 0.01 Var(z0^2) = 1.87
    (Var(z0^2) = 2 * 81), Cov(u0, u1) = -0.1 E z0^3 = 0; E x = R E u - 1, Cov x = R diag(9, 1.87) R^T. Each moment
    is within 4 of its standard errors, estimated from the samples."""
    path, x = sample_file(tmp_path)
    n = 100000
    assert path.name == f"banana-dim=2-samples={n}.npy" and x.shape == (n, 2) and x.dtype == np.float64
    c, s = math.cos(math.radians(240)), math.sin(math.radians(240))
    rot = np.array([[c, s], [-s, c]])
    mean, cov = rot @ np.array([0.0, -0.9]) - 1.0, rot @ np.diag([9.0, 1.87]) @ rot.T
    centered = x - x.mean(0)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * x.std(0) / math.sqrt(n))
    for i, j in ((0, 0), (1, 1), (0, 1)):
        prod = centered[:, i] * centered[:, j]
        assert abs(prod.mean() - cov[i, j]) < 4 * prod.std() / math.sqrt(n), (i, j, prod.mean(), cov[i, j])


def test_gen_samples_embedded_banana_and_seeds(tmp_path):
    """--data_dim > 2 embeds the banana by softplus(x W): positive values, n x data_dim; a seed gives the same file
    bytes, another seed other samples."""
    _, x = sample_file(tmp_path / "a", "--data_dim", "5", "--num_samples", "1000", "--seed", "4")
    _, again = sample_file(tmp_path / "b", "--data_dim", "5", "--num_samples", "1000", "--seed", "4")
    _, other = sample_file(tmp_path / "c", "--data_dim", "5", "--num_samples", "1000", "--seed", "5")
    assert x.shape == (1000, 5) and np.all(x > 0)
    assert (tmp_path / "a" / "banana-dim=5-samples=1000.npy").read_bytes() == \
        (tmp_path / "b" / "banana-dim=5-samples=1000.npy").read_bytes()
    assert not np.any(x == other)


ROWS = [
    (gen_gaussian_params, [], "the following arguments are required: --dim"),
    (gen_gaussian_params, ["--dim", "0"], "--dim"),
    (gen_gaussian_params, ["--dim", "two"], "--dim"),
    (gen_gaussian_params, ["--dim", "2", "--save_dir", "{file}"], "--save_dir {file}: is a file"),
    (gen_samples, ["--num_samples", "0"], "--num_samples"),
    (gen_samples, ["--dataset", "cauchy"], "--dataset"),
    (gen_samples, ["--data_dim", "1"], "--data_dim 1: the banana source has at least 2 dimensions"),
    (gen_samples, ["--dataset", "gaussian", "--gparams_path", "{tmp}/none.npz"], "--gparams_path not found"),
    (gen_samples, ["--dataset", "gaussian", "--gparams_path", "{params}", "--data_dim", "3"],
     "--data_dim 3 does not match"),
    (gen_samples, ["--dataset", "gaussian", "--gparams_path", "{file}"], "--gparams_path: {file} must be an .npz"),
]


@pytest.mark.parametrize("module, argv, message", ROWS,
                         ids=[f"{r[0].__name__}-{i}" for i, r in enumerate(ROWS)])
def test_bad_input_is_one_error_line(tmp_path, capsys, monkeypatch, module, argv, message):
    paths = {"tmp": tmp_path, "file": tmp_path / "a_file", "params": tmp_path / "gaussian_params-dim=4.npz"}
    paths["file"].write_text("not an npz")
    np.savez(paths["params"], loc=np.zeros(4), scale=np.ones(4))
    monkeypatch.chdir(tmp_path)  # the default --save_dir, data/, would appear here
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as e:
        cli.run(module.main, [a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert message.format(**paths) in lines[0], err
    assert sorted(tmp_path.rglob("*")) == before


def test_as_a_user_would(tmp_path):
    ok = run_script("gen_gaussian_params.py", "--dim", "4", "--save_dir", tmp_path, check=True)
    assert ok.stdout.strip() == f"wrote {tmp_path / 'gaussian_params-dim=4.npz'}"
    ok = run_script("gen_samples.py", "--dataset", "gaussian", "--gparams_path", tmp_path / "gaussian_params-dim=4.npz",
                    "--num_samples", "10", "--save_dir", tmp_path, check=True)
    assert np.load(tmp_path / "gaussian-dim=4-samples=10.npy").shape == (10, 4)
    bad = run_script("gen_samples.py", "--num_samples", "-3", "--save_dir", tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "--num_samples" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
