"""reproduce.py's image experiments at the smoke tier, end to end: the lowgan sandwich holds (the lower bound's
interval starts below every upper bound at the same slope), and the Kodak pipeline of the three models gives their
points; the BD-rate reader against the published curves."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import number, spread, table_rows

from utils import jsonl
from utils.experiments import images

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("RDS_DATA_DIR")


@pytest.mark.skipif(not DATA or not Path(DATA, "kodak").is_dir() or not Path(DATA, "bsds500").is_dir(),
                    reason="needs the shared data (RDS_DATA_DIR with kodak/ and bsds500/)")
def test_smoke_tier_of_the_image_experiments(tmp_path):
    r = subprocess.run([sys.executable, "reproduce.py", "--tier", "smoke", "--only", "lowgan-sandwich", "kodak-cpu",
                        "--out", str(tmp_path / "runs"), "--page", str(tmp_path / "page.md")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "page.md").read_text()
    rows = table_rows(text, "lowgan-sandwich")
    uppers = [c for c in rows if "lower bound" not in c[1]]
    lowers = [c for c in rows if "lower bound" in c[1]]
    assert {c[1] for c in uppers} == {"upper bound (resnet_vae.py)", "mbt2018.py", "ms2020.py"} and lowers
    for lb in lowers:
        assert all(number(lb[3]) - spread(lb[3]) <= number(ub[3]) + 3 * spread(ub[3]) for ub in uppers)
    kodak = table_rows(text, "kodak-cpu")
    assert sorted(c[1] for c in kodak) == ["mbt2018.py", "ms2020.py", "resnet_vae.py"]
    assert all(5 < number(c[3]) < 60 and float(c[6].split()[0]) > 0 for c in kodak)  # PSNR in dB, bpp
    for name in ("lowgan-sandwich", "kodak-cpu"):
        assert (tmp_path / "figures" / "reproduction" / f"{name}.png").stat().st_size > 10000


def test_bd_rate_rows_against_the_published_curves(tmp_path):
    """A curve equal to the published mbt2018 curve has its BD-rate against VTM: the gap to the paper is 0."""
    import bd_rate

    table = bd_rate.read_reference(bd_rate.DEFAULT_REFERENCE)
    points = table["kodak"][images.PUBLISHED["mbt2018"]]
    run = tmp_path / "mbt2018-run"
    run.mkdir()
    for i, (bpp, psnr) in enumerate(points):
        jsonl.append(run / "results.jsonl", {"method": "mbt2018", "dataset": "kodak", "lambda": 0.001 * (i + 1),
                                              "bpp": bpp, "psnr": psnr})
    rows = images.kodak_read(tmp_path)
    bd = [r for r in rows if r.quantity.startswith("BD-rate")]
    assert len(bd) == 1 and abs(bd[0].gap) < 1e-9 and math.isfinite(bd[0].value) and bd[0].value > 0
    assert len(rows) == len(points) + 1
