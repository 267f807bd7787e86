"""reproduce.py: the runner's bookkeeping (resume, refusals, the recipe check), the paper's commands at the gpu tier,
and the smoke tier of the vector-source experiments end to end, with the page's figures on the right side of the
analytic R(D)."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import number, spread, table_rows

import reproduce
from utils import experiments, jsonl
from utils.experiments import page
from utils.experiments.base import Experiment, Row, step, train

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("RDS_DATA_DIR")


# ---- the runner, on toy experiments whose commands are `python -c` one-liners ----------------------------------

def toy(tmp_path, monkeypatch, steps, name="toy"):
    """Registers one experiment made of `steps` in place of the real registry."""
    e = Experiment(name=name, title="a toy", reproduces="nothing", commands=lambda tier: steps,
                   read=lambda out: [Row("x", "toy", float((Path(out) / "x").read_text()), 1.0, "analytic")],
                   figure=False)
    monkeypatch.setattr(experiments, "BY_NAME", {name: e})
    monkeypatch.setattr(experiments, "EXPERIMENTS", [e])
    monkeypatch.setattr(page, "EXPERIMENTS", [e])
    return e


def main(tmp_path, *extra):
    reproduce.main(["--tier", "smoke", "--out", str(tmp_path / "runs"), "--page", str(tmp_path / "page.md"), *extra])


def events(tmp_path, name="toy"):
    return jsonl.read(tmp_path / "runs" / "smoke" / name / "steps.jsonl")


WRITE_X = step("-c", "open('{out}/x', 'w').write('1.5')")
# Fails until the file `go` exists; a training step, so a resumed run passes it --cont (recorded in `argv`).
FLAKY = train("-c", "import os, sys; open('{out}/argv', 'a').write(' '.join(sys.argv[1:]) + ';'); "
                    "sys.exit(0 if os.path.exists('{out}/go') else 3)")


def test_runs_each_command_once_and_renders_the_rows(tmp_path, monkeypatch):
    toy(tmp_path, monkeypatch, [WRITE_X])
    main(tmp_path)
    log = events(tmp_path)
    assert [e["event"] for e in log] == ["start", "done", "finished"]
    assert log[1]["wall_s"] >= 0 and log[1]["machine"] and log[2]["machine"]
    text = (tmp_path / "page.md").read_text()
    assert re.search(r"\| x \| toy \| 1 \(analytic\) \| 1\.5 \| 0\.5 \(\+50\.00%\)", text)
    main(tmp_path)  # finished: not run again
    assert len(events(tmp_path)) == 3


def test_interrupted_run_needs_cont_and_resumes_training_with_cont(tmp_path, monkeypatch):
    toy(tmp_path, monkeypatch, [WRITE_X, FLAKY])
    with pytest.raises(reproduce.cli.InputError, match="1 experiment"):
        main(tmp_path)
    out = tmp_path / "runs" / "smoke" / "toy"
    assert [e["event"] for e in events(tmp_path)] == ["start", "done", "start", "failed"]
    assert "Interrupted after 1 of its 2 commands" in (tmp_path / "page.md").read_text()
    with pytest.raises(reproduce.cli.InputError, match="interrupted run; pass --cont"):
        main(tmp_path)
    (out / "go").touch()
    main(tmp_path, "--cont")
    # the finished first command is not run again; the interrupted training continues with the script's --cont
    assert [e["step"] for e in events(tmp_path) if e["event"] == "start"] == [0, 1, 1]
    assert (out / "argv").read_text() == ";--cont;"
    assert events(tmp_path)[-1]["event"] == "finished"


def test_cont_refuses_a_folder_made_by_another_recipe(tmp_path, monkeypatch):
    toy(tmp_path, monkeypatch, [WRITE_X, FLAKY])
    with pytest.raises(reproduce.cli.InputError):
        main(tmp_path)
    toy(tmp_path, monkeypatch, [step("-c", "open('{out}/x', 'w').write('2')"), FLAKY])
    with pytest.raises(reproduce.cli.InputError, match="command 1 there was .*remove the folder"):
        main(tmp_path, "--cont")


def test_missing_data_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("RDS_DATA_DIR", str(tmp_path / "nodata"))
    with pytest.raises(reproduce.cli.InputError, match=r"gaussian-1000d-ub needs gaussian_params-dim=1000\.npz"):
        main(tmp_path, "--only", "gaussian-1000d-ub")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, message", [
    (["--tier", "cpu", "--only", "nope"], "invalid choice"),
    (["--tier", "fast"], "invalid choice"),
    (["--tier", "cpu", "--jobs", "0"], "--jobs"),
    (["--tier", "cpu", "--page", "out.html"], "expected a .md file"),
])
def test_bad_flags_exit_2_with_one_line(argv, message):
    r = subprocess.run([sys.executable, "reproduce.py", *argv, "--dry_run"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def dry_run(tier, name):
    r = subprocess.run([sys.executable, "reproduce.py", "--tier", tier, "--only", name, "--dry_run"], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    return [line for line in r.stdout.splitlines() if line.startswith("python ")]


def test_gpu_tier_is_the_papers_commands():
    """The seed README's Gaussian commands: the upper bound over its seven lambdas at 80 x 1000 steps, lr 5e-4,
    batch 64; the lower bound's recipe (units 100n, k = 1024, 3000 steps, eval exhaustive M = 30) at n = 2..16."""
    ub = [c for c in dry_run("gpu", "gaussian-1000d-ub") if " train " in c]
    assert [float(re.search(r"--lambda (\S+)", c).group(1)) for c in ub] == [0.3, 1, 3, 10, 30, 100, 300]
    assert all("--epochs 80 --steps_per_epoch 1000 --lr 0.0005 --batchsize 64 --max_validation_steps 1" in c and
               "--rpd" in c and "--decoder_units 0" in c for c in ub)
    lb = dry_run("gpu", "gaussian-lb-dims")
    for n in (2, 4, 8, 16):
        units = ",".join([str(100 * n)] * 3)
        assert any(f"--data_dim {n} " in c and f"--units {units}" in c and "--last_step 3000" in c and
                   "--batchsize 1024" in c and "--lr 0.0005 --lr_schedule" in c for c in lb)
        assert any(f"--data_dim {n} " in c and " eval " in c and "--num_Ck_samples 30" in c for c in lb)


# ---- the smoke tier of the vector sources ---------------------------------------------------------------------

@pytest.mark.skipif(not DATA or not Path(DATA, "physics").is_dir(),
                    reason="needs the shared data (RDS_DATA_DIR with physics/, gaussian_params-dim=1000.npz, fsdd/)")
def test_smoke_tier_of_the_vector_sources(tmp_path):
    names = [e.name for e in experiments.vector.EXPERIMENTS]
    r = subprocess.run([sys.executable, "reproduce.py", "--tier", "smoke", "--only", *names, "--out",
                        str(tmp_path / "runs"), "--page", str(tmp_path / "page.md")], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "page.md").read_text()
    for name in names:
        rows = table_rows(text, name)
        assert rows and all(math.isfinite(number(c[3])) for c in rows), name
    # N(0, I_2) at lambda = 3: the intercept is n/2 (1 + ln(2 lambda / n)) = 1 + ln 3 nats
    demo = {c[1]: c for c in table_rows(text, "gaussian-2d-demo")}
    truth = 1 + math.log(3)
    assert all(abs(number(c[2]) - truth) < 5e-4 for c in demo.values())
    assert number(demo["upper bound (rdub_mlp.py)"][3]) > truth - 3 * spread(demo["upper bound (rdub_mlp.py)"][3])
    lb = demo["lower bound (rdlb.py)"][3]
    assert number(lb) - spread(lb) < truth
    for c in table_rows(text, "gaussian-lb-dims"):  # N(0, I_n) at lambda = 5n: n/2 (1 + ln 10)
        n = int(re.match(r"n = (\d+)", c[0]).group(1))
        assert abs(number(c[2]) - n / 2 * (1 + math.log(10))) < 5e-3
        assert number(c[3]) - spread(c[3]) < number(c[2])
    for name in ("gaussian-2d-demo", "gaussian-lb-dims", "physics-2d", "banana-2d"):
        assert (tmp_path / "figures" / "reproduction" / f"{name}.png").stat().st_size > 10000
