"""Bad inputs and outputs over every top-level script: each is refused before any work, as one `error: ...` line
with exit status 2 and no traceback, naming the script's own flag, and leaves nothing behind.

Most rows run in-process through `utils.cli.run` (each script's start costs seconds); a few run as a user would.
In an argv, `{x}` names a path of the `paths` fixture.
"""
import importlib
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from utils import cli

TINY_RVAE = ["--num_filters", "8", "--latent_channels", "2,4,4"]
CONVNEXT = ["--arch", "convnext", "--widths", "8,16", "--enc_blocks", "1,0", "--latent_blocks", "1,1",
            "--latent_channels", "2,4", "--lmb_range", "0.001,0.1"]
MBT_RUN = "mbt2018-num_filters=4-lmbda=0.01"

ROWS = [
    # outputs: a folder where a file goes, a file where a folder goes, a missing folder, an existing file
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "compress", "{png}", "{folder}"], "output {folder}: is a folder"),
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "compress", "{png}", "{file}/x.tfci"], "{file} is not a folder"),
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "compress", "{png}", "{tmp}/no/x.tfci"], "does not exist"),
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "compress", "{png}", "{file}"], "exists; pass --force"),
    ("ms2020", ["--checkpoint_dir", "{ckpt}", "decompress", "{file}", "{png}"], "output {png}: exists"),
    ("mbt2018", ["--checkpoint_dir", "{file}", "train", "--dataset", "kodak"], "--checkpoint_dir {file}: is a file"),
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "eval", "--results_dir", "{file}/r"], "--results_dir"),
    ("mbt2018", ["--checkpoint_dir", "{taken}", "eval"], "results.jsonl: is a folder"),
    ("resnet_vae", [*TINY_RVAE, "--checkpoint_dir", "{file}/c", "train", "--dataset", "kodak"], "--checkpoint_dir"),
    ("rec", [*TINY_RVAE, "--checkpoint_dir", "{ckpt}", "compress", "{png}", "{folder}"], "output {folder}: is a"),
    ("rec", [*TINY_RVAE, "--checkpoint_dir", "{ckpt}", "decompress", "{file}", "{png}"], "pass --force"),
    ("bb_sga", ["--checkpoint_dir", "{ckpt}", "decompress", "{file}", "{png}", "--run_name", MBT_RUN], "--force"),
    ("sga", ["--checkpoint_dir", "{ckpt}", "compress", MBT_RUN, "{png}", "--results_dir", "{file}"],
     "--results_dir {file}: is a file"),
    ("sga", ["--checkpoint_dir", "{ckpt}", "compress", MBT_RUN, "{png}", "--results_dir", "{imgs}"],
     "img.tfci is a folder"),
    ("bb_sga", ["--checkpoint_dir", "{ckpt}", "compress", MBT_RUN, "{png}", "--results_dir", "{file}/r"],
     "--results_dir"),
    ("mcbits", ["--weights", "{file}", "compress", "--output", "{folder}"], "--output {folder}: is a folder"),
    ("mcbits", ["decompress", "{file}", "--output", "{png}"], "--output {png}: exists"),
    ("mcbits", ["train", "--checkpoint_dir", "{file}"], "--checkpoint_dir"),
    ("plot_rd", ["--checkpoint_dir", "{tmp}", "--out", "{file}/rd"], "--out"),
    ("plot_rd", ["--checkpoint_dir", "{tmp}", "--out", "{tmp}/plot"], "--out {tmp}/plot.png: is a folder"),
    ("bd_rate", ["--test", "x.jsonl", "--plot", "{file}/rd.png"], "--plot"),
    ("ba", ["--samples", "gaussian", "--lamb", "1", "--save_dir", "{file}"], "--save_dir"),
    ("wgd", ["--samples", "gaussian", "--lamb", "1", "--save_dir", "{file}/w"], "--save_dir"),
    ("gen_gaussian_params", ["--dim", "2", "--save_dir", "{file}"], "--save_dir"),
    ("gen_samples", ["--save_dir", "{file}/s"], "--save_dir"),
    ("prepare_speech", ["--save_dir", "{file}"], "--save_dir"),
    ("prepare_imgs", ["{png}", "{file}"], "dst_dir {file}"),
    ("rdub_mlp", ["--lambda", "1", "--checkpoint_dir", "{file}", "train"], "--checkpoint_dir"),
    ("rdlb", ["--dataset", "gaussian", "--lamb", "1", "--checkpoint_dir", "{file}", "train"], "--checkpoint_dir"),
    # inputs: a folder where a file is expected, another encoding, JSON of another shape
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "decompress", "{folder}", "{tmp}/x.png"], "input {folder}: is a"),
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "compress", "{tmp}/none.png", "{tmp}/x.tfci"], "input not found"),
    ("mcbits", ["--weights", "{folder}", "compress"], "--weights {folder}: is a folder"),
    ("mcbits", ["decompress", "{folder}", "--output", "{tmp}/x.npy"], "message {folder}: is a folder"),
    ("ba", ["--samples", "{folder}", "--lamb", "1", "--save_dir", "{tmp}/ba"], "--samples"),
    ("plot_rd", ["--checkpoint_dir", "{listflags}"], "flags.json: holds a JSON list"),
    ("plot_rd", ["--checkpoint_dir", "{listline}"], "results.jsonl:1: a JSON list, not an object"),
    ("plot_rd", ["--checkpoint_dir", "{utf16run}"], "not UTF-8"),
    ("bd_rate", ["--anchor", "{utf16}", "--test", "{utf16}"], "not UTF-8"),
    ("bd_rate", ["--anchor", "{listline}/" + MBT_RUN + "/results.jsonl", "--test", "{utf16}"],
     "a JSON list, not an object"),
    ("sga", ["--checkpoint_dir", "{listflags}", "compress", MBT_RUN, "{png}", "--results_dir", "{tmp}/r"],
     "flags.json: holds a JSON list"),
    # floats: NaN and infinity, lists included
    ("rdlb", ["--dataset", "gaussian", "--lamb", "nan", "train"], "argument --lamb"),
    ("rdlb", ["--dataset", "gaussian", "--lamb", "1", "train", "--target_lambs", "0.5,nan"], "--target_lambs"),
    ("rdlb", ["--dataset", "gaussian", "--lamb", "1", "train", "--beta", "nan"], "argument --beta"),
    ("resnet_vae", [*TINY_RVAE, "eval", "--lambdas", "0.1,inf"], "argument --lambdas"),
    ("resnet_vae", [*TINY_RVAE, "--lmb_range", "nan,1", "train", "--dataset", "kodak"], "argument --lmb_range"),
    ("mbt2018", ["--lambda", "inf", "eval"], "argument --lambda"),
    ("mbt2018", ["train", "--dataset", "kodak", "--ema", "nan"], "argument --ema"),
    ("ms2020", ["train", "--dataset", "kodak", "--lr_decay_factor", "-inf"], "argument --lr_decay_factor"),
    ("wgd", ["--samples", "gaussian", "--lamb", "1", "nan"], "argument --lamb"),
    ("ba", ["--samples", "gaussian", "--lamb", "inf"], "argument --lamb"),
    # flags that end up in a file header
    ("ms2020", ["--num_slices", "254", "eval"], "argument --num_slices"),
    ("bb_sga", ["--z_bin_width", "2", "decompress", "{file}", "{tmp}/x.png", "--run_name", MBT_RUN],
     "--z_bin_width 2.0: must be a power of 2"),
    ("bb_sga", ["--rate_lr", "1e300", "decompress", "{file}", "{tmp}/x.png", "--run_name", MBT_RUN], "--rate_lr"),
    ("rec", [*TINY_RVAE, "--kl_per_partition", "1000", "decompress", "{file}", "{tmp}/x.png"],
     "--kl_per_partition * --extra_samples"),
    # image sizes the models cannot train on
    ("mbt2018", ["--checkpoint_dir", "{tmp}/c", "train", "--dataset", "kodak", "--patchsize", "32"],
     "--patchsize 32: must be a multiple of 64"),
    ("ms2020", ["--checkpoint_dir", "{tmp}/c", "train", "--dataset", "kodak", "--patchsize", "96"],
     "--patchsize 96: must be a multiple of 64"),
    ("resnet_vae", ["--checkpoint_dir", "{tmp}/c", "train", "--dataset", "kodak", "--patchsize", "32"],
     "--patchsize 32: must be a multiple of 64"),
    ("resnet_vae", [*CONVNEXT, "--checkpoint_dir", "{tmp}/c", "train", "--dataset", "kodak", "--patchsize", "20"],
     "--patchsize 20: must be a multiple of 8"),
    ("resnet_vae", [*TINY_RVAE, "--flat_z0", "--img_dim", "32", "--checkpoint_dir", "{tmp}/c", "train", "--dataset",
                    "kodak", "--patchsize", "64"], "--patchsize 64: --flat_z0 fixes the image size"),
    # export folders: one that exists, one --force would wrongly delete, a file
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "export", "{folder}"], "output {folder}: exists; pass --force"),
    ("ms2020", ["--checkpoint_dir", "{ckpt}", "export", "{imgs}", "--force"], "a folder that is not a SavedModel"),
    ("mbt2018", ["--checkpoint_dir", "{ckpt}", "export", "{file}"], "output {file}: is a file"),
    # coding with an export: a folder that is not one, and one given with --run
    ("mbt2018", ["compress", "--export", "{folder}", "{png}", "{tmp}/x.tfci"], "--export {folder}: not an export"),
    ("ms2020", ["--run", "{folder}", "decompress", "--export", "{folder}", "{file}", "{tmp}/x.png"],
     "--export and --run: give one"),
]

SUBPROCESS = {0, 34, 40}  # rows also run as a user would: a file command, a JSON input, a float flag


@pytest.fixture
def paths(tmp_path):
    """The paths the rows name, made in tmp_path; returns (format mapping, the root of what a row may write)."""
    p = {"tmp": tmp_path, "file": tmp_path / "a_file", "folder": tmp_path / "a_folder", "png": tmp_path / "img.png",
         "ckpt": tmp_path / "ckpt", "utf16": tmp_path / "utf16.csv"}
    p["file"].write_bytes(b"not a compressed file")
    p["folder"].mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p["png"])
    p["ckpt"].mkdir()
    p["utf16"].write_text("bpp,psnr\n0.5,30\n", encoding="utf-16")
    p["taken"] = tmp_path / "taken"
    (p["taken"] / "mbt2018-num_filters=192-lmbda=0.01" / "results.jsonl").mkdir(parents=True)
    (tmp_path / "plot.png").mkdir()
    p["imgs"] = tmp_path / "imgs"
    (p["imgs"] / "img.tfci").mkdir(parents=True)
    for name, flags, log in (("listflags", "[1, 2]", ""), ("listline", "{}", "[1, 2]\n"), ("utf16run", "{}", None)):
        run = tmp_path / name / MBT_RUN
        run.mkdir(parents=True)
        (run / "flags.json").write_text(flags)
        if log is None:
            (run / "results.jsonl").write_text('{"method": "ba"}\n', encoding="utf-16")
        else:
            (run / "results.jsonl").write_text(log)
        p[name] = tmp_path / name
    return {k: str(v) for k, v in p.items()}, tmp_path


def tree(root):
    return sorted((str(f.relative_to(root)), f.is_dir()) for f in root.rglob("*"))


def fill(items, mapping):
    return [a.format(**mapping) for a in items]


@pytest.mark.parametrize("script, argv, message", ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(ROWS)])
def test_refused_in_process(script, argv, message, paths, capsys, monkeypatch):
    mapping, root = paths
    monkeypatch.chdir(root)  # a default output folder (checkpoints, results, data) would appear here
    before = tree(root)
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as e:
        cli.run(module.main, fill(argv, mapping))
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    check_one_error_line(err, message.format(**mapping))
    assert tree(root) == before


@pytest.mark.parametrize("index", sorted(SUBPROCESS))
def test_refused_as_a_script(index, paths):
    mapping, root = paths
    script, argv, message = ROWS[index]
    before = tree(root)
    proc = run_script(f"{script}.py", *fill(argv, mapping), cwd=root)
    assert proc.returncode == 2, proc.stderr
    check_one_error_line(proc.stderr, message.format(**mapping))
    assert tree(root) == before


def check_one_error_line(err, message):
    assert "Traceback" not in err and "usage:" not in err, err  # argparse's usage block too is one line here
    errors = [line for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1] and errors[0].startswith("error: "), err
    assert message in errors[0], err


def test_float_lists_and_numbers_refuse_nan_and_infinity():
    import argparse
    for parse in (cli.float_list, cli.positive_float, cli.nonnegative_float, cli.finite_float):
        for text in ("nan", "inf", "-inf", "1,nan" if parse is cli.float_list else "NaN"):
            with pytest.raises(argparse.ArgumentTypeError):
                parse(text)
    assert cli.float_list("0.5, 2") == [0.5, 2.0] and cli.finite_float("-3") == -3.0


def test_json_inputs_name_the_file(tmp_path):
    (tmp_path / "flags.json").write_text(json.dumps([1]))
    with pytest.raises(cli.InputError, match="flags.json: holds a JSON list, not an object"):
        cli.read_json(tmp_path / "flags.json", "flags file")
    with pytest.raises(cli.InputError, match="Is a directory"):
        cli.read_text(tmp_path, "flags file")
