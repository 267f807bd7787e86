"""The seed experiments of reproduce.py (utils/experiments/seeds.py): every tier's commands parse with their
scripts' own parsers, the readers turn results records into rows beside the right references, and (with the data)
one experiment's smoke tier runs end to end."""
import csv
import importlib
import json

import pytest

from conftest import ROOT, data_path, run_script
from utils.experiments import BY_NAME, seeds
from utils.experiments.base import TIERS

NAMES = ["mcbits-released", "sga-vs-amortized", "bits-back", "rec-lossless", "rec-lossy", "variable-rate"]


def test_registry_order_and_tiers():
    assert [e.name for e in seeds.EXPERIMENTS] == NAMES
    for e in seeds.EXPERIMENTS:
        assert BY_NAME[e.name] is e
        assert all(e.steps(t) for t in TIERS), e.name
        assert e.reproduces and e.notes.get("cpu") and e.notes.get("gpu"), e.name
        assert not e.figure  # no step writes {out}/figure.png


def parse(argv):
    """The script's own parser on the command's arguments (SystemExit on a bad flag)."""
    script, args = argv[0][:-3], argv[1:]
    if script == "mbt2018":
        from utils import codec_flags
        return codec_flags.parse_args("mbt2018", "", args)
    module = importlib.import_module(script)
    return module.build_parser().parse_args(args) if hasattr(module, "build_parser") else module.parse_args(args)


@pytest.mark.parametrize("tier", TIERS)
def test_every_command_parses(tier, tmp_path):
    for e in seeds.EXPERIMENTS:
        for step in e.steps(tier):
            argv = step.command(tmp_path / e.name)
            assert (ROOT / argv[0]).exists(), argv
            parse(argv)


def test_mcbits_reader_against_the_published_table(tmp_path):
    with open(ROOT / "data/reference/mcbits.csv") as f:
        published = {(r["table"], r["coder"], r["num_particles"]): r for r in csv.DictReader(f)
                     if r["train_split"] == r["compress_split"] == "mnist"}
    records = [dict(coder=c, num_particles=k, num_images=10, net_bpd=0.2 + k / 1000, total_bpd=0.3, ideal_bpd=0.19,
                    net_minus_ideal_se_bpd=0.001, initial_bits=1000, initial_bits_used=900)
               for c, k in seeds.MCBITS_CODERS]
    (tmp_path / "mcbits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = seeds.mcbits_read(tmp_path)
    by = {(r.quantity, r.reference_kind): r for r in rows}
    net = by[("BB-ELBO: net bits/dim", "seed: McBits README, EMNIST-MNIST")]
    elbo = published[("coupled", "bb_is", "1")]  # BB-IS with one particle is BB-ELBO
    assert net.value == 0.201 and net.reference == float(elbo["net_bpd"])
    assert by[("BB-ELBO: total bits/dim", "seed: McBits README, EMNIST-MNIST")].reference == float(elbo["total_bpd"])
    cis = by[("BB-CIS (50): total bits/dim", "seed: McBits README, EMNIST-MNIST")]
    assert cis.reference == float(published[("coupled", "bb_cis", "50")]["total_bpd"])
    assert by[("BB-IS (5): net against the ideal bound", "-IWAE_5")].reference == 0.19
    assert rows[0].quantity.startswith("BB-ELBO")  # the tables' order


def write_run(folder, flags, *records):
    folder.mkdir(parents=True)
    (folder / "flags.json").write_text(json.dumps(flags))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_variable_rate_reader_pairs_lambdas(tmp_path):
    common = dict(method="resnet_vae", dataset="kodak", num_images=24)
    write_run(tmp_path / "fixed-0.01", {}, dict(common, **{"lambda": 0.01}, bpp=1.0, mse=100.0, psnr=28.0))
    write_run(tmp_path / "variable", {},
              dict(common, **{"lambda": 0.01}, lmb_range=[0.0025, 0.04], bpp=0.9, mse=90.0, psnr=28.6),
              dict(common, **{"lambda": 0.02}, lmb_range=[0.0025, 0.04], bpp=1.2, mse=70.0, psnr=29.7))
    rows = seeds.variable_rate_read(tmp_path)
    loss = {r.quantity: r for r in rows if "λ MSE" in r.quantity}
    assert loss["λ = 0.01: bpp + λ MSE"].value == pytest.approx(0.9 + 0.01 * 90)
    assert loss["λ = 0.01: bpp + λ MSE"].reference == pytest.approx(1.0 + 0.01 * 100)
    assert loss["λ = 0.02: bpp + λ MSE"].reference is None  # no fixed model there


def test_mcbits_smoke_end_to_end(tmp_path):
    data_path("mcbits/train_bin_emnist_split=mnist_num=50.npz")
    data_path("mnist/t10k-images-idx3-ubyte.gz")
    run_script("reproduce.py", "--tier", "smoke", "--only", "mcbits-released", "--out", tmp_path, check=True)
    page = (tmp_path / "smoke" / "reproduction.md").read_text()
    assert "| BB-IS (50): net bits/dim |" in page and "Not run at this tier yet: `python reproduce.py --tier smoke " \
        "--only mcbits-released`" not in page
    # five coders: net, net against the ideal, and total
    assert len(seeds.mcbits_read(tmp_path / "smoke" / "mcbits-released")) == 15


def test_smoke_tier_of_sga_and_bits_back(tmp_path):
    """SGA and bits-back end to end at toy sizes (iREC and the variable-rate model: test_reproduce_rec.py, a file of
    its own so that the two test workers share them); a total rate holds the net rate."""
    from conftest import number, table_rows

    data_path("kodak/kodim01.png")
    data_path("bsds500")
    names = ["sga-vs-amortized", "bits-back"]
    run_script("reproduce.py", "--tier", "smoke", "--only", *names, "--out", tmp_path, check=True, timeout=1800)
    page = (tmp_path / "smoke" / "reproduction.md").read_text()
    rows = {name: table_rows(page, name) for name in names}
    assert all(rows.values()), [n for n, r in rows.items() if not r]
    sga = {c[0]: c for c in rows["sga-vs-amortized"]}
    assert number(sga["λ = 0.01: rate"][3]) > 0 and number(sga["λ = 0.01: rate"][2]) > 0
    bb = {c[0]: c for c in rows["bits-back"]}
    assert number(bb["λ = 0.01: file (total) rate, mean"][3]) >= number(bb["λ = 0.01: net rate, mean"][3])
