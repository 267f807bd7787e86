"""plot_rd.py gathers every method's results.jsonl into one CSV in common units, and the sandwich plot."""
import csv
import math

import pytest

from conftest import run_script
from utils import jsonl, runs


def write_run(root, name, flags, records):
    run_dir = runs.make_run_dir(root, name)
    runs.save_flags(run_dir, flags)
    for r in records:
        jsonl.append(run_dir / "results.jsonl", r)


def test_collects_methods_in_common_units(tmp_path):
    root = tmp_path / "ck"
    flags = {"dataset": "gaussian", "data_dim": 4, "gparams_path": None}
    for lamb in (1.0, 3.0):
        write_run(root, f"ba-lamb={lamb}-bins=30", {"samples": "gaussian", "data_dim": 4},
                  [{"method": "ba", "lamb": lamb, "R": 1.0 * lamb, "D": 0.5 / lamb, "lagrangian": 0.0,
                    "data_dim": 4, "rate_unit": "nats", "per_dim": False}])
        # An upper bound logged in bits per dimension: 1 bit/dim in 4-d = 4 ln 2 nats per sample.
        write_run(root, f"rdub_mlp-data_dim=4-lmbda={lamb}-prior_type=gmm_1", flags,
                  [{"method": "rdub", "lambda": lamb, "rate": 1.0, "rate_stderr": 0.01, "mse": 0.3 / lamb,
                    "mse_stderr": 0.0, "loss": 0.0, "data_dim": 4, "rate_unit": "bits", "per_dim": True}])
        write_run(root, f"rdlb-data_dim=4-lamb={lamb}", flags,
                  [{"method": "rdlb", "lamb": lamb, "R_lb": 0.5 * lamb, "R_lb_stderr": 0.1, "R_lb_lo": 0.5 * lamb - 0.2,
                    "R_lb_hi": 0.5 * lamb + 0.2, "num_xi": 10, "data_dim": 4, "rate_unit": "nats", "per_dim": False}])
    run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=True)
    rows = list(csv.DictReader(open(tmp_path / "rd.csv")))
    assert (tmp_path / "rd.png").stat().st_size > 0
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    assert {m: len(v) for m, v in by_method.items()} == {"ba": 2, "rdub": 2, "rdlb": 2}
    assert float(by_method["rdub"][0]["R"]) == pytest.approx(4 * math.log(2))
    assert [float(r["lamb"]) for r in by_method["ba"]] == [1.0, 3.0]
    assert {r["label"] for r in by_method["ba"]} == {"Blahut-Arimoto"}
    assert {r["label"] for r in by_method["rdub"]} == {"upper bound (beta-VAE)"}


def test_a_diverged_record_is_left_out_with_a_note(tmp_path):
    """A record whose estimate was not finite (written null) is left out, with a note naming its file; the
    others are drawn."""
    root = tmp_path / "ck"
    flags = {"dataset": "banana", "data_dim": 2, "gparams_path": None}
    for lamb, rate in ((1.0, None), (3.0, 0.5)):
        write_run(root, f"rdub_mlp-data_dim=2-lmbda={lamb}", flags,
                  [{"method": "rdub", "lambda": lamb, "rate": rate, "rate_stderr": None if rate is None else 0.01,
                    "mse": None if rate is None else 0.2, "mse_stderr": 0.0, "data_dim": 2, "rate_unit": "nats",
                    "per_dim": False}])
    proc = run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=True)
    assert "rdub_mlp-data_dim=2-lmbda=1.0/results.jsonl: a record without a finite rate" in proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "rd.csv")))
    assert [(r["method"], float(r["lamb"])) for r in rows] == [("rdub", 3.0)]


def test_empty_folder_is_a_clear_error(tmp_path):
    proc = run_script("plot_rd.py", "--checkpoint_dir", tmp_path, check=False)
    assert proc.returncode == 2 and "no results.jsonl" in proc.stderr


def test_image_models_are_drawn_in_rdlb_units(tmp_path):
    """A GAN-source image model's bits per pixel and MSE on [0, 255] become nats per image and MSE on [0, 1]."""
    root = tmp_path / "ck"
    write_run(root, "resnet_vae-num_filters=8-lmbda=1e-06", {},
              [{"method": "resnet_vae", "lambda": 1e-6, "rate": 0.001, "bpp": 0.001, "mse": 650.25,
                "data_dim": 128 * 128 * 3, "rate_unit": "bits", "per_dim": False, "per_pixel": True}])
    write_run(root, "rdlb-data_dim=2-lamb=1000.0", {},
              [{"method": "rdlb", "lamb": 1000.0, "R_lb": 3.0, "R_lb_stderr": 0.1, "R_lb_lo": 2.8, "R_lb_hi": 3.2,
                "num_xi": 10, "data_dim": 2, "rate_unit": "nats", "per_dim": False}])
    run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=True)
    (ub,) = [r for r in csv.DictReader(open(tmp_path / "rd.csv")) if r["method"] == "resnet_vae"]
    assert float(ub["R"]) == pytest.approx(0.001 * 128 * 128 * math.log(2))
    assert float(ub["D"]) == pytest.approx(0.01)
    assert ub["label"] == "upper bound (ResNet-VAE)"

    write_run(root, "resnet_vae-num_filters=8-lmbda=0.01", {},
              [{"method": "resnet_vae", "lambda": 0.01, "rate": 0.5, "mse": 50.0, "data_dim": None,
                "rate_unit": "bits", "per_dim": False, "per_pixel": True, "run": "kodak-run"}])
    proc = run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd2", check=False)
    assert proc.returncode == 2 and "kodak-run" in proc.stderr and not (tmp_path / "rd2.csv").exists()


def _lb_record(run_dir, seed, log_ck, nlu, batchsize=1024, npz=None, **extra):
    """An rdlb eval's .npz and results.jsonl record (with its draws unless npz is False)."""
    import numpy as np
    from utils import rd
    xi, log_alpha = rd.lb_xi(log_ck, nlu)
    ci = rd.lb_interval(log_ck, nlu)
    name = npz or f"rd-step=10-lamb=10.0-seed={seed}-k={batchsize}.npz"
    if npz is not False:
        np.savez(run_dir / name, lamb=10.0, xi=xi, log_Ck=log_ck, neg_log_u=nlu, log_alpha=log_alpha)
    record = {"method": "rdlb", "lamb": 10.0, "R_lb": float(xi.mean()), "R_lb_stderr": 0.1, "R_lb_lo": ci["lo"],
              "R_lb_hi": ci["hi"], "num_xi": len(xi), "data_dim": 2, "rate_unit": "nats", "per_dim": False,
              "seed": seed, "ckpt": str(run_dir / "step=10-lamb=10.0-kerasckpt"), "batchsize": batchsize,
              "y_init": "exhaustive", **extra}
    if npz is not False:
        record["npz"] = name
    jsonl.append(run_dir / "results.jsonl", record)
    return record


def _draws(seed, m=6):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.normal(-4.0, 0.5, m), rng.normal(-1.7, 0.02, m)


def test_seeds_of_one_estimator_are_pooled_not_maximized(tmp_path):
    """Two seeds of one checkpoint at one lambda become one point: xi over all their draws, alpha leave-one-out
    over all of them."""
    import numpy as np
    root = tmp_path / "ck"
    run_dir = runs.make_run_dir(root, "rdlb-data_dim=2-lamb=10.0")
    for seed in (0, 1):
        _lb_record(run_dir, seed, *_draws(seed))
    run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=True)
    (row,) = list(csv.DictReader(open(tmp_path / "rd.csv")))
    log_ck, nlu = map(np.concatenate, zip(_draws(0), _draws(1)))
    c = np.exp(log_ck)
    alpha = (c.sum() - c) / (c.size - 1)
    assert float(row["R"]) == pytest.approx(np.mean(nlu - c / alpha - np.log(alpha) + 1), rel=1e-9)
    assert float(row["R_lo"]) < float(row["R"]) < float(row["R_hi"])


def test_pooling_counts_a_file_once_and_keeps_estimators_apart(tmp_path):
    root = tmp_path / "ck"
    run_dir = runs.make_run_dir(root, "rdlb-data_dim=2-lamb=10.0")
    rec = _lb_record(run_dir, 0, *_draws(0))
    _lb_record(run_dir, 0, *_draws(0))  # the same seed evaluated again: the same .npz, a second record
    other = _lb_record(run_dir, 0, *_draws(5), batchsize=4096)  # another estimator (k) at the same lambda
    run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=True)
    rows = sorted(csv.DictReader(open(tmp_path / "rd.csv")), key=lambda r: float(r["R"]))
    assert len(rows) == 2
    # Each point carries its own file's figures, not those of its draws counted twice.
    for row, want in zip(rows, sorted((rec, other), key=lambda r: r["R_lb"])):
        assert (float(row["R"]), float(row["R_lo"]), float(row["R_hi"])) == pytest.approx(
            (want["R_lb"], want["R_lb_lo"], want["R_lb_hi"]), rel=1e-9)


def test_pooling_refuses_a_record_without_its_draws(tmp_path):
    root = tmp_path / "ck"
    run_dir = runs.make_run_dir(root, "rdlb-data_dim=2-lamb=10.0")
    _lb_record(run_dir, 0, *_draws(0))
    _lb_record(run_dir, 1, *_draws(1), npz=False)
    proc = run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=False)
    assert proc.returncode == 2 and "seed 1" in proc.stderr and "no draws to pool" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "rd.csv").exists()
