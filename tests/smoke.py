"""`make smoke`: every top-level script at its paper's (or its documented CPU recipe's) architecture, patch size and
batch, trained for a step or two, then its eval, compress, decompress and export where it has them.

The test suite runs tiny models; this runs the real sizes, where TensorFlow's CPU kernels take other paths. It
stops at the first step that crashes, writes a NaN or infinity into a record, or decodes a file to an image of the
wrong size, and prints that step's command and the end of its output. It needs the shared data
($RDS_DATA_DIR: physics/, kodak/, bsds500/, mnist/, mcbits/, gaussian_params-dim=1000.npz).

    python tests/smoke.py                   # everything, in a temporary folder removed on success
    python tests/smoke.py --only codecs     # one group (vector, codecs, hvae, lossless)
    python tests/smoke.py --keep smoke_out  # keep the runs in smoke_out/
"""
import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Architecture flags, as the docs give them (docs/paper_commands.md and each page's CPU recipe).
GAUSS1000 = ("--dataset gaussian --gparams_path data/gaussian_params-dim=1000.npz --data_dim 1000 --latent_dim 1000 "
             "--prior_type gmm_1 --posterior_type gaussian --encoder_activation none --decoder_activation none "
             "--decoder_units 0 --rpd --lambda 10")
PHYS16_UB = ("--dataset data/physics/ppzee-split=train.npy --data_dim 16 --latent_dim 16 --prior_type deep "
             "--posterior_type uniform --encoder_units 500,500 --decoder_units 500,500 --encoder_activation softplus "
             "--decoder_activation softplus --nats --lambda 1000")
BANANA_UB = ("--dataset banana --data_dim 2 --latent_dim 2 --prior_type maf --maf_stacks 3 --posterior_type gaussian "
             "--encoder_units 100,100 --decoder_units 100,100 --encoder_activation softplus --decoder_activation "
             "softplus --ar_hidden_units 10,10 --ar_activation softplus --nats --lambda 1")
PHYS16_LB = "--dataset data/physics/ppzee-split=train.npy --data_dim 16 --model mlp --units 200,200,200 --lamb 1000"
GAN_LB = "--dataset lowgan --data_dim 2 --model cnn --units 4,8,16,1024 --kernel_dims 9,5,3 --lamb 1000 --chunksize 16"
RVAE_PAPER = "--latent_channels 4,8,16,32,64,128 --ar_prior_levels 4 --ar_slices 8 --num_filters 256 --lambda 0.01"
RVAE_GAN = ("--latent_channels 4,8,16,32,64,128 --num_filters 256 --lambda 1e-6 --flat_z0 --img_dim 128 "
            "--maf_units 32,16 --maf_stacks 3")
RVAE_CPU = "--latent_channels 4,8,16,32 --ar_prior_levels 2 --ar_slices 4 --num_filters 64 --lambda 0.01"
RVAE_VR = "--latent_channels 4,8,16,32 --ar_prior_levels 2 --ar_slices 4 --num_filters 64 --lmb_range 0.0025,0.04"
RVAE_MNIST = "--likelihood dlogistic --image_channels 1 --latent_channels 8,16 --num_filters 48"
BB_RUN = "mbt2018-num_filters=192-hyper_posterior=gaussian-lmbda=0.01"  # the bits-back model's run folder
SHORT = "--epochs 1 --steps_per_epoch 2 --max_validation_steps 1"
IMG = "--dataset bsds500"
COMMANDS = ("train", "eval", "compress", "decompress", "export")  # named in the progress lines
KODIM = "{data}/kodak/kodim01.png"  # 768x512: the codecs' and the bound's pad-and-crop paths


def steps():
    """(group, script, arguments) in order; {w} is the work folder, {data} $RDS_DATA_DIR."""
    c = "--checkpoint_dir {w}/ckpt"
    return [
        ("vector", "gen_gaussian_params.py", "--save_dir {w}/gen --dim 1000"),
        ("vector", "gen_samples.py", "--dataset banana --data_dim 2 --num_samples 1000 --save_dir {w}/gen"),
        ("vector", "ba.py", "--samples data/physics/n=2-ppzee-split=test.npy --save_dir {w}/physics --bins 60 "
                            "--steps 2 --tol 1e-5 --lamb 100"),
        ("vector", "wgd.py", "--samples data/physics/n=2-ppzee-split=train.npy --save_dir {w}/physics --lamb 100 "
                             "--steps 2"),
        ("vector", "rdub_mlp.py", f"{GAUSS1000} {c} train --epochs 1 --steps_per_epoch 2 --lr 5e-4 --batchsize 64 "
                                  "--max_validation_steps 1"),
        ("vector", "rdub_mlp.py", f"{GAUSS1000} {c} eval --num_samples 1000"),
        ("vector", "rdub_mlp.py", f"{PHYS16_UB} {c} train --epochs 1 --steps_per_epoch 2 --batchsize 512 "
                                  "--max_validation_steps 1"),
        ("vector", "rdub_mlp.py", f"{PHYS16_UB} {c} eval"),
        ("vector", "rdub_mlp.py", f"{BANANA_UB} {c} train --epochs 1 --steps_per_epoch 2 --batchsize 1024"),
        ("vector", "rdub_mlp.py", f"{BANANA_UB} {c} eval --num_samples 1000"),
        ("vector", "rdlb.py", f"{PHYS16_LB} {c} train --batchsize 2048 --num_Ck_samples 2 --last_step 2 "
                              "--checkpoint_interval 2 --y_init quick --y_quick_topn 3 --lr 5e-4 --lr_schedule"),
        ("vector", "rdlb.py", f"{PHYS16_LB} {c} eval --batchsize 2048 --num_Ck_samples 2 --y_init exhaustive"),
        ("vector", "rdlb.py", f"{GAN_LB} {c} train --batchsize 256 --num_Ck_samples 2 --last_step 2 "
                              "--checkpoint_interval 2 --y_init quick --y_quick_topn 3 --lr 3e-4"),
        ("vector", "plot_rd.py", "--checkpoint_dir {w}/physics --out {w}/physics/plot"),
        # The codecs at the paper's width and crop (256 px, batch 8); the bits-back variant for bb_sga.py.
        ("codecs", "mbt2018.py", f"{c} --lambda 0.01 train {IMG} --patchsize 256 --batchsize 8 {SHORT}"),
        ("codecs", "mbt2018.py", f"{c} --lambda 0.01 eval --dataset {KODIM} --results_dir {{w}}/res"),
        ("codecs", "mbt2018.py", f"{c} --lambda 0.01 compress {KODIM} {{w}}/k.tfci"),
        ("codecs", "mbt2018.py", f"{c} --lambda 0.01 decompress {{w}}/k.tfci {{w}}/k-mbt.png"),
        ("codecs", "mbt2018.py", f"{c} --lambda 0.01 export {{w}}/mbt2018-export"),
        ("codecs", "docs/deploy_codec.py", f"{{w}}/mbt2018-export compress {KODIM} {{w}}/k.tfc"),
        ("codecs", "docs/deploy_codec.py", "{w}/mbt2018-export decompress {w}/k.tfc {w}/k-mbt-export.png"),
        ("codecs", "sga.py", f"{c} --iterations 2 compress mbt2018-num_filters=192-lmbda=0.01 {KODIM} "
                             "--results_dir {w}/sga"),
        ("codecs", "ms2020.py", f"{c} --lambda 0.01 train {IMG} --patchsize 256 --batchsize 8 {SHORT}"),
        ("codecs", "ms2020.py", f"{c} --lambda 0.01 eval --dataset {KODIM} --results_dir {{w}}/res"),
        ("codecs", "ms2020.py", f"{c} --lambda 0.01 compress {KODIM} {{w}}/k2.tfci"),
        ("codecs", "ms2020.py", f"{c} --lambda 0.01 decompress {{w}}/k2.tfci {{w}}/k-ms.png"),
        ("codecs", "ms2020.py", f"{c} --lambda 0.01 export {{w}}/ms2020-export"),
        ("codecs", "docs/deploy_codec.py", f"{{w}}/ms2020-export compress {KODIM} {{w}}/k2.tfc"),
        ("codecs", "docs/deploy_codec.py", "{w}/ms2020-export decompress {w}/k2.tfc {w}/k-ms-export.png"),
        ("codecs", "mbt2018.py", f"{c} --hyper_posterior gaussian --lambda 0.01 train {IMG} --patchsize 256 "
                                 f"--batchsize 8 {SHORT}"),
        ("codecs", "bb_sga.py", f"{c} --iterations 2 --rate_iterations 2 compress "
                                f"{BB_RUN} {KODIM} "
                                "--results_dir {w}/bb"),
        ("codecs", "bb_sga.py", f"{c} decompress {{w}}/bb/kodim01.bbi {{w}}/k-bb.png --run_name {BB_RUN}"),
        ("codecs", "bd_rate.py", "--dataset kodak --test 'RD-sandwich upper bound (resnet_vae)'"),
        # The image bound: the paper's architecture (natural images at a 64 px crop of batch 1, where oneDNN's
        # strided 1x1 kernel used to crash; the GAN model at its 128 px), the CPU recipe, the variable-rate model
        # and the seed's ConvNeXt hierarchy. No lossy REC files: after two steps a latent's KL is beyond what REC
        # codes (rec.py refuses it with one line); the lossless model below is coded.
        ("hvae", "resnet_vae.py", f"{RVAE_PAPER} {c} train {IMG} --patchsize 64 --batchsize 1 {SHORT}"),
        ("hvae", "resnet_vae.py", f"{RVAE_GAN} {c} train --dataset lowgan --data_dim 2 --batchsize 8 {SHORT}"),
        ("hvae", "resnet_vae.py", f"{RVAE_GAN} {c} eval --dataset lowgan --data_dim 2 --no_cast_xhat "
                                  "--batchsize 8 --results_dir {w}/res"),
        ("hvae", "resnet_vae.py", f"{RVAE_CPU} {c} train {IMG} --patchsize 128 --batchsize 8 {SHORT}"),
        ("hvae", "resnet_vae.py", f"{RVAE_CPU} {c} eval --dataset {KODIM} --results_dir {{w}}/res"),
        ("hvae", "resnet_vae.py", f"{RVAE_VR} {c} train {IMG} --patchsize 128 --batchsize 8 {SHORT}"),
        ("hvae", "resnet_vae.py", f"{RVAE_VR} {c} eval --dataset {{w}}/crop.png --num_lambdas 2 "
                                  "--results_dir {w}/res"),
        ("hvae", "resnet_vae.py", f"--arch convnext --lmb_range_seed 4,2048 {c} train {IMG} --patchsize 64 "
                                  f"--batchsize 1 {SHORT} --clip_norm 2 --ema 0.9999"),
        # Lossless: REC on a discretized-logistic MNIST model; McBits on the released weights, every coder.
        ("lossless", "resnet_vae.py", f"{RVAE_MNIST} {c} train --dataset mnist --batchsize 32 {SHORT}"),
        ("lossless", "rec.py", f"{RVAE_MNIST} {c} compress {{w}}/digit.png {{w}}/digit.rec"),
        ("lossless", "rec.py", f"{RVAE_MNIST} {c} decompress {{w}}/digit.rec {{w}}/digit-rec.png"),
        ("lossless", "mcbits.py", "--weights data/mcbits/train_bin_emnist_split=mnist_num=5.npz compress "
                                  "--coder bb_elbo --num_compress 20 --results_dir {w}/mcbits"),
        ("lossless", "mcbits.py", "--weights data/mcbits/train_bin_emnist_split=mnist_num=5.npz compress "
                                  "--coder bb_cis --num_particles 5 --num_compress 20 --results_dir {w}/mcbits"),
        ("lossless", "mcbits.py", f"--dataset mnist train {c} --bound iwae --num_particles 5 {SHORT}"),
    ]


# Each decoded image must have its source's size: (decoded, source); paths relative to the work folder.
ROUND_TRIPS = [("k-mbt.png", KODIM), ("k-ms.png", KODIM), ("k-bb.png", KODIM), ("digit-rec.png", "digit.png")]
# The export's decode of its own file must be the script's decode of the package file, pixel for pixel.
SAME = [("k-mbt-export.png", "k-mbt.png"), ("k-ms-export.png", "k-ms.png")]


def write_inputs(work, data):
    """A 128x128 crop of kodim01 (the variable-rate model's eval) and the first MNIST test digit (REC's lossless
    files)."""
    from PIL import Image
    from utils import mnist
    Image.open(f"{data}/kodak/kodim01.png").crop((0, 0, 128, 128)).save(work / "crop.png")
    Image.fromarray(mnist.grey_levels("mnist", "test")[0]).save(work / "digit.png")


def bad_numbers(work):
    """Records under `work` holding NaN or infinity: (file, line number)."""
    bad = []
    for path in sorted(work.rglob("*.json*")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            try:
                values = json.loads(line)
            except ValueError:
                continue
            stack = [values]
            while stack:
                v = stack.pop()
                if isinstance(v, dict):
                    stack.extend(v.values())
                elif isinstance(v, list):
                    stack.extend(v)
                elif isinstance(v, float) and not math.isfinite(v):
                    bad.append((path, i))
                    stack = []
    return bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["vector", "codecs", "hvae", "lossless"], action="append",
                        help="run only these groups (repeatable; default: all)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder, removed on "
                                       "success)")
    args = parser.parse_args()
    data = os.environ.get("RDS_DATA_DIR")
    if not data or not Path(data, "kodak", "kodim01.png").exists():
        sys.exit(f"error: RDS_DATA_DIR must point at the shared data (kodak/, bsds500/, ...); it is {data!r}")
    work = Path(args.keep or tempfile.mkdtemp(prefix="rds-smoke-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    write_inputs(work, data)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.monotonic()
    chosen = [s for s in steps() if not args.only or s[0] in args.only]
    for n, (group, script, flags) in enumerate(chosen, 1):
        argv = [sys.executable, str(ROOT / script), *shlex.split(flags.format(w=work, data=data))]
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        command = next((w for w in flags.split() if w in COMMANDS), "")
        print(f"[{n}/{len(chosen)}] {group:8s} {seconds:6.1f} s  {script} {command}", flush=True)
        if proc.returncode != 0:
            print(f"FAILED (exit {proc.returncode}): {shlex.join(argv)}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
            return 1
        bad = bad_numbers(work)
        if bad:
            print(f"FAILED: non-finite numbers after {script}: " + ", ".join(f"{p}:{i}" for p, i in bad[:5]))
            return 1
    from PIL import Image
    for decoded, source in ROUND_TRIPS:
        out = work / decoded
        if not out.exists():
            continue  # its group was not run
        src = Path(source.format(data=data)) if "{data}" in source else work / source
        if Image.open(out).size != Image.open(src).size:
            print(f"FAILED: {decoded} is {Image.open(out).size}, its source {Image.open(src).size}")
            return 1
    import numpy as np
    for exported, scripted in SAME:
        if (work / exported).exists() and not np.array_equal(np.asarray(Image.open(work / exported)),
                                                             np.asarray(Image.open(work / scripted))):
            print(f"FAILED: {exported} (the export's decode) differs from {scripted} (the script's)")
            return 1
    print(f"smoke passed: {len(chosen)} steps in {time.monotonic() - start:.0f} s ({work})")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
