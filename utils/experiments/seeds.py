"""The seed systems: McBits, SGA, lossy bits-back, iREC and the variable-rate bound.

Each experiment checks one seed paper's claim with this package's script for it (docs/mcbits.md, docs/sga.md,
docs/rec.md, docs/resnet_vae.md). Except McBits, whose released weights are data, every experiment trains the
model it needs, so it runs alone. The cpu tier is the docs pages' CPU recipe, shortened where the page says how
long it takes (each experiment's `notes`); the gpu tier is the pages' paper-scale commands, with BSDS500 in place
of COCO (not in the shared data: COCO would need `prepare_imgs.py` and `--dataset cocotrain`).
"""
import csv
from pathlib import Path

import numpy as np

from utils import jsonl
from utils.experiments.base import Experiment, Row, fmt_lamb, lamb_of, last_per, pick, records, step, train

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "reference"


def kodak_first(n):
    """The first n Kodak images as the image scripts take a glob (a data/... glob is looked up under
    $RDS_DATA_DIR), n < 10."""
    return f"data/kodak/kodim0[1-{n}].png"


# ---- 1. McBits on its released checkpoints -----------------------------------------------------------------

MCBITS = "mcbits/train_bin_emnist_split=mnist_num={k}.npz"  # under $RDS_DATA_DIR; trained with K particles
MCBITS_CODERS = (("bb_elbo", 1), ("bb_is", 5), ("bb_cis", 5), ("bb_is", 50), ("bb_cis", 50))
MCBITS_NAMES = {"bb_elbo": "BB-ELBO", "bb_is": "BB-IS", "bb_cis": "BB-CIS"}


def mcbits_steps(tier):
    # Each coder codes with the checkpoint trained for its K, as McBits' tables do. The coder is NumPy on the CPU:
    # the gpu tier is the cpu tier's (the whole MNIST test set).
    images = pick(tier, 10000, 10000, 10)
    return [step("mcbits.py", "--weights", "data/" + MCBITS.format(k=k), "compress", "--coder", coder,
                 "--num_particles", k, "--num_compress", images, "--ideal_samples", pick(tier, 100, 100, max(k, 10)),
                 "--results_dir", "{out}")
            for coder, k in MCBITS_CODERS]


def mcbits_published():
    """(coder, K) -> (net, total) of McBits' MNIST -> MNIST setting: its BB-CIS table (which has the totals)
    where it has the coder, else its in/out-of-distribution table."""
    found = {}
    with open(REFERENCE / "mcbits.csv") as f:
        for r in csv.DictReader(f):
            if r["train_split"] != "mnist" or r["compress_split"] != "mnist":
                continue
            key = (r["coder"], int(r["num_particles"]))
            if key == ("bb_is", 1):  # one particle: BB-IS is BB-ELBO (the BB-CIS table's N = 1 row)
                key = ("bb_elbo", 1)
            if key not in found or r["table"] == "coupled":
                found[key] = (float(r["net_bpd"]), float(r["total_bpd"]) if r["total_bpd"] else None)
    return found


def mcbits_read(out):
    published = mcbits_published()
    rows = []
    recs = jsonl.read(Path(out) / "mcbits.jsonl")
    order = {coder_k: i for i, coder_k in enumerate(MCBITS_CODERS)}  # the tables' order
    for r in last_per(recs, lambda r: order.get((r["coder"], r["num_particles"]), len(order))):
        k = r["num_particles"]
        label = MCBITS_NAMES[r["coder"]] + ("" if r["coder"] == "bb_elbo" else f" ({k})")
        method = f"mcbits.py, released num={k} checkpoint"
        note = f"{r['num_images']} classic MNIST test images"
        net, total = published.get((r["coder"], k), (None, None))
        rows.append(Row(f"{label}: net bits/dim", method, r["net_bpd"], net, "seed: McBits README, EMNIST-MNIST",
                        None, "bits/dim", note))
        rows.append(Row(f"{label}: net against the ideal bound", method, r["net_bpd"], r["ideal_bpd"],
                        "-ELBO" if r["coder"] == "bb_elbo" else f"-IWAE_{k}", r.get("net_minus_ideal_se_bpd"),
                        "bits/dim", "the coder's overhead; same model and images"))
        if total is not None:
            rows.append(Row(f"{label}: total bits/dim", method, r["total_bpd"], total,
                            "seed: McBits README, EMNIST-MNIST", None, "bits/dim",
                            f"initial bits included: {r['initial_bits']} seeded, {r['initial_bits_used']} used"))
    return rows


MCBITS_DATA = "the released weights were trained on EMNIST-MNIST and are coded here on classic MNIST (EMNIST is " \
              "not in the shared data; the digits differ, docs/mcbits.md), so the published figures are a guide, not " \
              "a target; the posterior's counts are at 20 bits (McBits: 16, which costs ~3% here); McBits codes " \
              "500 images and counts only the initial bits it uses, this package seeds a worst case and counts it " \
              "all in the total"

MCBITS_RELEASED = Experiment(
    name="mcbits-released", title="Monte Carlo bits-back coding on the released McBits checkpoints",
    reproduces="the McBits seed's tables (MNIST -> MNIST column of 'In- & Out-of-Distribution Compression "
               "Performance' and 'Comparison with Coupled Variant (BB-CIS)'): net (and total) bits/dim of BB-ELBO, "
               "BB-IS and BB-CIS with 5 and 50 particles",
    commands=mcbits_steps,
    read=mcbits_read, figure=False,
    needs=("mnist/t10k-images-idx3-ubyte.gz", *(MCBITS.format(k=k) for k in (1, 5, 50))),
    notes={"smoke": "10 images per coder: " + MCBITS_DATA,
           "cpu": "the whole classic MNIST test set (10,000 images) per coder; " + MCBITS_DATA,
           "gpu": "as the cpu tier (the coder runs in NumPy on the CPU); " + MCBITS_DATA},
)


# ---- 2. SGA against the amortized encoder (the mbt2018 steps are shared with 3) --------------------------------

def mbt2018_name(filters, lamb, bits_back):
    """The run folder mbt2018.py names (utils/runs.run_name: floats by repr)."""
    return f"mbt2018-num_filters={filters}" + ("-hyper_posterior=gaussian" if bits_back else "") + \
        f"-lmbda={float(lamb)!r}"


def mbt2018_filters(tier, lamb):
    """The width: the paper's 192 (256 at lambda >= 0.04, docs/sga.md), the CPU recipe's 64, a smoke's 16."""
    return pick(tier, 256 if lamb >= 0.04 else 192, 64, 16)


def mbt2018_train(tier, lamb, bits_back):
    model = ("mbt2018.py", "-V", "--checkpoint_dir", "{out}/ckpt", "--num_filters", mbt2018_filters(tier, lamb),
             *(("--hyper_posterior", "gaussian") if bits_back else ()), "--lambda", lamb)
    budget = pick(tier,
                  # the paper's: 2 M steps on 256x256 crops (docs/sga.md's GPU recipe)
                  ("--patchsize", 256, "--batchsize", 8, "--epochs", 2000, "--steps_per_epoch", 1000, "--lr", 1e-4,
                   "--warmup", 400, "--patience", 20),
                  # docs/codecs.md's CPU recipe (128x128 crops, step decay) at 2,000 of its 3,000 steps
                  ("--patchsize", 128, "--batchsize", 8, "--epochs", 8, "--steps_per_epoch", 250, "--lr", 5e-4,
                   "--lr_schedule", "step", "--max_validation_steps", 4),
                  ("--patchsize", 64, "--batchsize", 2, "--epochs", 1, "--steps_per_epoch", 10, "--lr", 5e-4,
                   "--max_validation_steps", 1))
    return train(*model, "train", "--dataset", "bsds500", *budget)


SGA_LAMBDAS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04)  # the paper's (docs/sga.md)


def inference_steps(tier, script, bits_back):
    """mbt2018 trained per lambda, then `script` (sga.py or bb_sga.py) on Kodak (cpu: crops of a few images)."""
    lambdas = pick(tier, SGA_LAMBDAS, (0.01,), (0.01,))
    # cpu: docs/sga.md's measured set, 256x256 centre crops of kodim01-06 (about 0.2 s an iteration here; whole
    # images would take hours per lambda)
    images = pick(tier, ("kodak",), (kodak_first(6), "--crop", 256), ("data/kodak/kodim01.png", "--crop", 64))
    iterations = pick(tier, (), (), ("--iterations", 20, *(("--rate_iterations", 20) if bits_back else ())))
    steps = []
    for lamb in lambdas:
        steps += [mbt2018_train(tier, lamb, bits_back),
                  step(script, "-V", "--checkpoint_dir", "{out}/ckpt", *iterations, "compress",
                       mbt2018_name(mbt2018_filters(tier, lamb), lamb, bits_back), *images,
                       "--results_dir", f"{{out}}/{script[:-3]}-{fmt_lamb(lamb)}")]
    return steps


def sga_read(out):
    """Per lambda: SGA's file against the amortized encoder's file of the same model and images (sga.py records
    both: `base_*`)."""
    rows = []
    for r in last_per(records(out, "mbt2018+sga"), lamb_of):
        lamb = lamb_of(r)
        note = f"{r['num_images']} images ({r['dataset']}), {r['iterations']} iterations"
        kind = "amortized encoder"
        rows += [Row(f"λ = {fmt_lamb(lamb)}: bpp + λ MSE", "SGA (sga.py)", r["bpp"] + lamb * r["mse"],
                     r["base_bpp"] + lamb * r["base_mse"], kind, None, "bpp", note + "; rates from the files' bytes"),
                 Row(f"λ = {fmt_lamb(lamb)}: rate", "SGA (sga.py)", r["bpp"], r["base_bpp"], kind,
                     r.get("rate_stderr"), "bpp", "from the files' bytes"),
                 Row(f"λ = {fmt_lamb(lamb)}: PSNR", "SGA (sga.py)", r["psnr"], r["base_psnr"], kind, None, "dB",
                     "mean over images")]
    return rows


SGA_VS_AMORTIZED = Experiment(
    name="sga-vs-amortized", title="SGA against the amortized encoder",
    reproduces="the SGA seed's Table 1, M1 (SGA) against M3 (the base mean-scale hyperprior's amortized "
               "encoder): the same mbt2018 model's files on Kodak, per lambda",
    commands=lambda tier: inference_steps(tier, "sga.py", False),
    read=sga_read, figure=False, needs=("bsds500", "kodak"),
    notes={"cpu": "one lambda (0.01) of the paper's six; the model is docs/codecs.md's CPU recipe (64 filters, "
                  "128x128 BSDS500 crops) trained 2,000 steps (the recipe: 3,000; the paper: 2 M at 192 filters on "
                  "COCO); SGA at the paper's 2,000 iterations on the 256x256 centre crops of kodim01-06 only (the 24 "
                  "whole images take hours per lambda on 2 cores, docs/sga.md)",
           "gpu": "the paper's six lambdas and widths (192 filters, 256 at lambda = 0.04), 2 M steps, on BSDS500 in "
                  "place of COCO; SGA on the 24 Kodak images"},
)


# ---- 3. lossy bits-back --------------------------------------------------------------------------------------

def bits_back_read(out):
    """The stack's net rate against the model's expected net rate over q, per lambda (mean) and per image."""
    rows = []
    for r in last_per(records(out, "mbt2018+bb_sga"), lamb_of):
        lamb = lamb_of(r)
        method = "SGA + bits-back (bb_sga.py)"
        rows.append(Row(f"λ = {fmt_lamb(lamb)}: net rate, mean", method, r["net_bpp"], r["net_bpp_est"],
                        "expected net rate (16 draws of q)", None, "bpp",
                        f"{r['num_images']} images ({r['dataset']}); PSNR {r['psnr']:.2f} dB"))
        rows.append(Row(f"λ = {fmt_lamb(lamb)}: file (total) rate, mean", method, r["total_bpp"], r["net_bpp"],
                        "net rate", None, "bpp", "the gap is the initial bits, paid once by a chain of images"))
        per_image = np.load(r["npz"]) if r.get("npz") and Path(r["npz"]).exists() else None
        if per_image is not None and 1 < len(per_image["names"]) <= 6:  # one row per image of a few
            for name, net, est in zip(per_image["names"], per_image["net_bpp"], per_image["net_bpp_est"]):
                rows.append(Row(f"λ = {fmt_lamb(lamb)}: net rate, {name}", method, float(net), float(est),
                                "expected net rate", None, "bpp"))
    return rows


BITS_BACK = Experiment(
    name="bits-back", title="Lossy bits-back coding of the hyper-latents",
    reproduces="the SGA seed's Table 1, M2 (SGA + BB): bb_sga.py's files on an mbt2018 model with a Gaussian "
               "hyper-posterior (--hyper_posterior gaussian), their net rate against the model's expected net rate",
    commands=lambda tier: inference_steps(tier, "bb_sga.py", True),
    read=bits_back_read, figure=False, needs=("bsds500", "kodak"),
    notes={"cpu": "one lambda (0.01); the bits-back model trained with docs/codecs.md's CPU recipe for 2,000 steps "
                  "(64 filters; the paper: 2 M steps at 192); SGA's 2,000 iterations and q's 2,000, on the 256x256 "
                  "centre crops of kodim01-06 only (docs/sga.md measured kodim01-02)",
           "gpu": "the paper's six lambdas and widths, 2 M steps, on BSDS500 in place of COCO; the 24 Kodak images"},
)


# ---- 4, 5. iREC: lossless and lossy ---------------------------------------------------------------------------

LOSSLESS_MODEL = {  # docs/rec.md's MNIST model (the seed's 24-block RVAE on Cifar10 is not available here)
    "smoke": ("--latent_channels", "2,4", "--num_filters", 8),
    "cpu": ("--latent_channels", "8,16", "--num_filters", 48),
    "gpu": ("--latent_channels", "8,16", "--num_filters", 48),
}


def rec_lossless_steps(tier):
    model = ("--likelihood", "dlogistic", "--image_channels", 1, *LOSSLESS_MODEL[tier], "--checkpoint_dir", "{out}")
    budget = pick(tier, ("--epochs", 1000, "--steps_per_epoch", 500, "--max_validation_steps", 20),  # the seed's 500k
                  ("--epochs", 16, "--steps_per_epoch", 500, "--max_validation_steps", 20),
                  ("--epochs", 1, "--steps_per_epoch", 10, "--max_validation_steps", 2))
    images = pick(tier, 10000, 500, 4)
    elbo = ("--elbo_samples", 16 if tier != "smoke" else 2)
    return [train("resnet_vae.py", "-V", *model, "train", "--dataset", "mnist", "--batchsize", 32, "--lr", 1e-3,
                  *budget),
            step("rec.py", "-V", *model, "eval", "--dataset", "mnist", "--batchsize", images, *elbo)]


def rec_lossless_read(out):
    rows = []
    for r in last_per(records(out, "rec"), lambda r: r["run"]):
        note = f"{r['num_images']} MNIST test images, one file each"
        for key, kind in (("png_bpd", "PNG (optimize)"), ("webp_bpd", "lossless WebP (method 6)"),
                          ("nelbo_bpd", "the model's negative ELBO")):
            rows.append(Row("bits/dim", "iREC file, every byte (rec.py)", r["file_bpd"], r[key], kind,
                            r.get("rate_stderr"), "bits/dim", note))
        # where the file's bits go: the REC stream against the KL it was given, the residual against -log p(x|z)
        # ("|" would split the page's table: "given" stands for it)
        rows += [Row("bits/dim: latents", "iREC's REC stream", r["latent_bpd"], r["coding_kl_bpd"],
                     "KL given to the coder", None, "bits/dim",
                     f"{r['extra_samples']:g} x the KL by design (1 + eps), plus headers and counts"),
                 Row("bits/dim: image given latents", "iREC's residual stream", r["residual_bpd"], r["nll_bpd"],
                     "the model's -log p(x given z)", None, "bits/dim",
                     "at the coded latents; the reference at posterior samples")]
    return rows


REC_LOSSLESS = Experiment(
    name="rec-lossless", title="Lossless iREC files of a ResNet-VAE",
    reproduces="the iREC seed's 'Lossless Single Image Compression' table: single-image iREC files against PNG, "
               "WebP and the RVAE's negative ELBO (here on MNIST, not Cifar10, ImageNet32 or Kodak)",
    commands=rec_lossless_steps,
    read=rec_lossless_read, figure=False, needs=("mnist",),
    notes={"cpu": "docs/rec.md's recipe: a 2-level ResNet-VAE with a discretized logistic likelihood (48 filters) "
                  "trained 8,000 steps on MNIST (the seed: a 24-block RVAE on Cifar10 and ImageNet32, 500k "
                  "iterations, not available here); the first 500 MNIST test images; the seed's lossless coder "
                  "settings (B = 20, 1 + eps = 1.2, omega = 3)",
           "gpu": "the seed's 500k iterations and the whole MNIST test set, with docs/rec.md's MNIST architecture "
                  "(the seed's Cifar10 RVAE is not available here)"},
)


RESNET_CPU = ("--latent_channels", "4,8,16,32", "--ar_prior_levels", 2, "--ar_slices", 4, "--num_filters", 64)
RESNET_PAPER = ("--latent_channels", "4,8,16,32,64,128", "--ar_prior_levels", 4, "--ar_slices", 8,
                "--num_filters", 256)
RESNET_SMOKE = ("--latent_channels", "2,4,4", "--ar_prior_levels", 1, "--ar_slices", 2, "--num_filters", 8)
PAPER_LAMBDAS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)  # the paper's section 6 (docs/resnet_vae.md)


def resnet_budget(tier, steps_cpu, steps_smoke):
    """resnet_vae.py train's budget: the paper's (gpu), docs/resnet_vae.md's CPU recipe at `steps_cpu` steps, or
    a smoke's few at a high learning rate (at the recipe's, a model trained a few dozen steps still has latents
    with thousands of nats of KL in one dimension, which REC refuses to code)."""
    return pick(tier,
                ("--patchsize", 256, "--batchsize", 8, "--epochs", 600, "--steps_per_epoch", 10000, "--warmup", 400,
                 "--patience", 20),
                ("--patchsize", 128, "--batchsize", 8, "--epochs", steps_cpu // 100, "--steps_per_epoch", 100,
                 "--lr", 3e-4, "--lr_schedule", "step", "--max_validation_steps", 4),
                ("--patchsize", 64, "--batchsize", 4, "--epochs", 1, "--steps_per_epoch", steps_smoke, "--lr", 3e-3,
                 "--max_validation_steps", 1))


def rec_lossy_steps(tier):
    lambdas = pick(tier, PAPER_LAMBDAS, (0.0025,), (0.01,))
    arch = pick(tier, RESNET_PAPER, RESNET_CPU, RESNET_SMOKE)
    # smoke: one 128x128 image of the GAN source (no data), since a whole Kodak image takes most of a minute
    images = pick(tier, ("kodak",), ("kodak",), ("lowgan", "--data_dim", 2, "--batchsize", 1))
    steps = []
    for lamb in lambdas:
        model = (*arch, "--lambda", lamb, "--checkpoint_dir", "{out}")
        steps += [train("resnet_vae.py", "-V", *model, "train", "--dataset", "bsds500", *resnet_budget(tier, 800, 60)),
                  # the model's own rate and distortion (a posterior sample) on the same images, beside the files
                  step("resnet_vae.py", "-V", *model, "eval", "--dataset", *images),
                  step("rec.py", "-V", *model, *(("--n_beams", 3) if tier == "smoke" else ()), "eval",
                       "--dataset", *images)]
    return steps


def rec_lossy_read(out):
    """Per lambda: the file's rate against the KL it codes, and against the model's own rate and PSNR."""
    own = {(lamb_of(r), r["dataset"]): r for r in records(out, "resnet_vae")}
    rows = []
    for r in last_per(records(out, "rec"), lamb_of):
        lamb = lamb_of(r)
        q = f"λ = {fmt_lamb(lamb)}"
        note = f"{r['num_images']} images ({r['dataset']})"
        rows += [Row(f"{q}: rate", "iREC file (rec.py)", r["file_bpp"], r["kl_bpp"], "KL along the coded path",
                     r.get("rate_stderr"), "bpp", note),
                 Row(f"{q}: rate", "iREC file (rec.py)", r["file_bpp"], r["coding_kl_bpp"], "KL given to the coder",
                     None, "bpp", "the top level as coded (its map to N(0, 1))")]
        model = own.get((lamb, r["dataset"]))
        if model is not None:
            rows += [Row(f"{q}: rate", "iREC file (rec.py)", r["file_bpp"], model["bpp"],
                         "the model's rate (resnet_vae.py eval)", None, "bpp", "at its own posterior sample"),
                     Row(f"{q}: PSNR", "iREC file (rec.py)", r["psnr"], model["psnr"],
                         "the model's PSNR (resnet_vae.py eval)", None, "dB", "")]
    return rows


REC_LOSSY = Experiment(
    name="rec-lossy", title="Lossy iREC files of a ResNet-VAE",
    reproduces="the iREC seed's 'Lossy Image Compression on Kodak': relative-entropy-coded files of a VAE's "
               "latents, their rate against the KL they code (and against the model's own rate and PSNR)",
    commands=rec_lossy_steps,
    read=rec_lossy_read, figure=False, needs=("bsds500", "kodak"),
    notes={"smoke": "one 128x128 image of the lowgan source coded with 3 beams (the seed's lossy setting: 10)",
           "cpu": "one lambda (0.0025), docs/resnet_vae.md's CPU-recipe ResNet-VAE (64 filters, 4 levels) trained "
                  "800 steps (docs/rec.md's measured run; the recipe: 4,500) on BSDS500; the seed's lossy coder "
                  "settings (B = 10, 1 + eps = 1, omega = 3) on the 24 Kodak images (22-44 s to encode an image, "
                  "2-4 s to decode); the seed codes its own two-level VAE",
           "gpu": "the paper's ResNet-VAE at its six lambdas, trained on BSDS500 in place of COCO, coded on the 24 "
                  "Kodak images (the coder runs on the CPU: its time grows with the rate)"},
)


# ---- 6. the variable-rate bound ------------------------------------------------------------------------------

VR_LAMBDAS = (0.0025, 0.01, 0.04)


def variable_rate_steps(tier):
    arch = pick(tier, RESNET_PAPER, RESNET_CPU, ("--latent_channels", "2,4", "--num_filters", 8))
    lambdas = pick(tier, PAPER_LAMBDAS, VR_LAMBDAS, (0.0025, 0.04))
    images = pick(tier, "kodak", "kodak", "data/kodak/kodim01.png")
    # gpu: the seed's schedule (docs/resnet_vae.md's GPU recipe) for every model, so that they compare at equal
    # training; cpu: docs/resnet_vae.md's measured comparison (the variable model trained as long as the fixed ones
    # together) at 600 steps a fixed model instead of 800, since a step takes ~0.7 s here (2,400 + 2,400 steps and
    # six evals of Kodak would pass the hour)
    seed_schedule = ("--patchsize", 256, "--batchsize", 16, "--epochs", 200, "--steps_per_epoch", 1000, "--lr", 2e-4,
                     "--lr_schedule", "half_cosine", "--patience", 0, "--clip_norm", 2, "--ema", 0.9999,
                     "--ema_warmup", 10000)

    def budget(models):  # `models` fixed models' worth of training
        return seed_schedule if tier == "gpu" else resnet_budget(tier, 600 * models, 10 * models)

    steps = []
    for lamb in lambdas:
        model = (*arch, "--lambda", lamb, "--checkpoint_dir", "{out}")
        steps += [train("resnet_vae.py", "-V", *model, "train", "--dataset", "bsds500", *budget(1)),
                  step("resnet_vae.py", *model, "eval", "--dataset", images)]
    lo_hi = pick(tier, ("--lmb_range_seed", "4,2048"), ("--lmb_range", "0.0025,0.04"), ("--lmb_range", "0.0025,0.04"))
    model = (*arch, *lo_hi, "--checkpoint_dir", "{out}")
    steps += [train("resnet_vae.py", "-V", *model, "train", "--dataset", "bsds500",
                    *budget(len(lambdas))),
              step("resnet_vae.py", *model, "eval", "--dataset", images,
                   "--lambdas", ",".join(fmt_lamb(lamb) for lamb in lambdas))]
    return steps


def variable_rate_read(out):
    """Per lambda: the one variable-rate model against the fixed-lambda model trained for that lambda."""
    recs = records(out, "resnet_vae")
    fixed = {lamb_of(r): r for r in recs if not r.get("lmb_range")}
    rows = []
    for r in last_per([r for r in recs if r.get("lmb_range")], lamb_of):
        lamb = lamb_of(r)
        ref = fixed.get(lamb)
        kind = "fixed-λ model" if ref else ""
        q = f"λ = {fmt_lamb(lamb)}"
        method = "variable-rate model (--lmb_range)"
        note = f"{r['num_images']} images ({r['dataset']}); range {r['lmb_range'][0]:g}-{r['lmb_range'][1]:g}"
        rows += [Row(f"{q}: bpp + λ MSE", method, r["bpp"] + lamb * r["mse"],
                     ref["bpp"] + lamb * ref["mse"] if ref else None, kind, None, "bpp", note),
                 Row(f"{q}: rate", method, r["bpp"], ref["bpp"] if ref else None, kind, r.get("rate_stderr"), "bpp",
                     "information rate (the bound's), not a file"),
                 Row(f"{q}: PSNR", method, r["psnr"], ref["psnr"] if ref else None, kind, None, "dB",
                     "mean over images")]
    return rows


VARIABLE_RATE = Experiment(
    name="variable-rate", title="One variable-rate ResNet-VAE against one model per lambda",
    reproduces="the variable-rate seed's premise behind its 'Pre-trained models' table (one lambda-conditioned "
               "model, rd_model_base, bounds the whole R-D curve) on this package's ResNet-VAE: the variable-rate "
               "model against fixed-lambda models of the same architecture at the same lambdas, on Kodak (the "
               "table's BD-rates against VTM 18.0 are not computed here)",
    commands=variable_rate_steps,
    read=variable_rate_read, figure=False, needs=("bsds500", "kodak"),
    notes={"cpu": "docs/resnet_vae.md's measured comparison, shorter: the CPU-recipe ResNet-VAE (64 filters, 4 "
                  "levels) at lambda = 0.0025, 0.01, 0.04, 600 steps each (docs: 800; the recipe: 4,500), against "
                  "one model on [0.0025, 0.04] trained 1,800 steps (their sum); information rates on the 24 Kodak "
                  "images; the seed's own model (--arch convnext, 187 M parameters) and its BD-rate against VTM "
                  "18.0 are not run by this experiment",
           "gpu": "the paper's ResNet-VAE (not the seed's ConvNeXt model) at its six lambdas, and one model on the "
                  "seed's range ([4, 2048] in its units), every model with the seed's schedule (200k steps, batch "
                  "16, half-cosine, clipping, EMA), on BSDS500 in place of COCO"},
)

EXPERIMENTS = [MCBITS_RELEASED, SGA_VS_AMORTIZED, BITS_BACK, REC_LOSSLESS, REC_LOSSY, VARIABLE_RATE]
