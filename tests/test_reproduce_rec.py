"""reproduce.py's iREC and variable-rate experiments at the smoke tier, end to end: the accounting their page rows
rest on holds exactly (a lossless file holds its two streams), and each variable-rate row is paired with the
fixed-lambda model of its lambda."""
from conftest import data_path, number, run_script, table_rows


def test_smoke_tier_of_irec_and_the_variable_rate_model(tmp_path):
    data_path("kodak/kodim01.png")
    data_path("bsds500")
    data_path("mnist/t10k-images-idx3-ubyte.gz")
    names = ["rec-lossless", "rec-lossy", "variable-rate"]
    run_script("reproduce.py", "--tier", "smoke", "--only", *names, "--out", tmp_path, check=True, timeout=1800)
    page = (tmp_path / "smoke" / "reproduction.md").read_text()
    rows = {name: table_rows(page, name) for name in names}
    assert all(rows.values()), [n for n, r in rows.items() if not r]
    rec = {c[0]: c for c in rows["rec-lossless"]}
    assert number(rec["bits/dim"][3]) >= number(rec["bits/dim: latents"][3]) + \
        number(rec["bits/dim: image given latents"][3]) - 1e-3  # the page's 4 digits
    assert any(c[0] == "λ = 0.01: rate" for c in rows["rec-lossy"])
    paired = [c for c in rows["variable-rate"] if c[0].endswith("bpp + λ MSE")]
    assert len(paired) == 2 and all("fixed-λ model" in c[2] for c in paired)
