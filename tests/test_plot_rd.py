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


def test_seeds_at_one_lambda_are_pooled_not_maximized(tmp_path):
    """Two evaluations at the same lambda become one point, the mean of all their xi samples."""
    import numpy as np
    root = tmp_path / "ck"
    run_dir = runs.make_run_dir(root, "rdlb-data_dim=2-lamb=10.0")
    xis = [np.array([1.0, 2.0, 3.0]), np.array([5.0, 6.0, 7.0])]
    for seed, xi in enumerate(xis):
        npz = f"rd-lamb=10.0-seed={seed}.npz"
        np.savez(run_dir / npz, lamb=10.0, xi=xi)
        jsonl.append(run_dir / "results.jsonl",
                     {"method": "rdlb", "lamb": 10.0, "R_lb": float(xi.mean()), "R_lb_stderr": 0.5,
                      "R_lb_lo": 0.0, "R_lb_hi": 9.0, "num_xi": 3, "data_dim": 2, "rate_unit": "nats",
                      "per_dim": False, "npz": npz})
    run_script("plot_rd.py", "--checkpoint_dir", root, "--out", tmp_path / "rd", check=True)
    (row,) = list(csv.DictReader(open(tmp_path / "rd.csv")))
    assert float(row["R"]) == pytest.approx(4.0)  # not max(2, 6)
    assert float(row["R_lo"]) < 4.0 < float(row["R_hi"])
