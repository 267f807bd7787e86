"""Images: the image sandwich on a GAN-image source (the paper's section 5) and natural images on Kodak (its
section 6), each beside the paper's own curves where they are published (data/reference/image_rd.csv).

`lowgan` (utils/gan_sources.py) stands in for the paper's BigGAN sources, which need a module download; it has the
same interface and a 2-d latent. The cpu tier trains narrower models far shorter than the paper (each experiment's
notes); their curves show the pipeline and the gap a CPU budget leaves, not the paper's figures.
"""
from utils.experiments.base import Experiment, Row, ci_half, last_per, records, step, train

# ---- the image sandwich on lowgan, d = 2 ------------------------------------------------------------------------

GAN = ("--dataset", "lowgan", "--data_dim", 2)
# rdlb.py's lamb 1000 (nats per image + lamb * MSE on [0, 1]) is the image models' lambda 1000 / (128^2 ln2 255^2)
# (utils.image_data.rdlb_lamb), so every method is scored at one slope.
GAN_RDLB_LAMB, GAN_LAMBDA = 1000, "1.3542e-06"
GAN_LB_RUN = ("rdlb-data_dim=2-model=cnn-units=4_8_16_1024-lamb=1000.0-batchsize={k}/"
              "step={step}-lamb=1000.0-kerasckpt.index")


def lowgan_steps(tier):
    smoke = tier == "smoke"
    steps_ub = {"smoke": (1, 2), "cpu": (30, 100), "gpu": (600, 1000)}[tier]
    steps_codec = {"smoke": (1, 2), "cpu": (10, 100), "gpu": (600, 1000)}[tier]
    batch = ("--batchsize", 8, "--epochs")
    rvae = ("resnet_vae.py", "--latent_channels", "2,4" if smoke else "2,4,8,16" if tier == "cpu" else
            "4,8,16,32,64,128", "--num_filters", 8 if smoke else 32 if tier == "cpu" else 256,
            "--lambda", GAN_LAMBDA, "--flat_z0", "--img_dim", 128, "--maf_units", "32,16", "--maf_stacks", 3,
            "--checkpoint_dir", "{out}")
    eval_flags = ("--no_cast_xhat", "--batchsize", 10 if smoke else 100)
    cpu_lr = () if tier == "gpu" else ("--lr", 1e-3, "--lr_schedule", "step")
    steps = [train(*rvae, "train", *GAN, *batch, steps_ub[0], "--steps_per_epoch", steps_ub[1], *cpu_lr,
                   "--max_validation_steps", 1 if smoke else 4),
             step(*rvae, "eval", *GAN, *eval_flags)]
    width = ("--num_filters", 8) if smoke else ("--num_filters", 64) if tier == "cpu" else ()
    ms_shape = ("--latent_depth", 16, "--hyperprior_depth", 8, "--num_slices", 2, "--max_support_slices", 1) \
        if smoke else ("--latent_depth", 160, "--hyperprior_depth", 64) if tier == "cpu" else ()
    for script, shape in (("mbt2018.py", ()), ("ms2020.py", ms_shape)):
        codec = (script, "--checkpoint_dir", "{out}", *width, *shape, "--lambda", GAN_LAMBDA)
        steps += [train(*codec, "train", *GAN, *batch, steps_codec[0], "--steps_per_epoch", steps_codec[1],
                        *(() if tier == "gpu" else ("--lr", 5e-4, "--lr_schedule", "step")),
                        *(("--max_validation_steps", 1) if smoke else ("--warmup", 400, "--patience", 10)
                          if tier == "gpu" else ("--max_validation_steps", 4))),
                  step(*codec, "eval", *GAN, *eval_flags)]
    k, last = {"smoke": (16, 2), "cpu": (256, 500), "gpu": (2048, 4000)}[tier]
    lb = ("rdlb.py", *GAN, "--model", "cnn", "--units", "4,8,16,1024", "--kernel_dims", "9,5,3", "--chunksize", 16)
    steps.append(train(*lb, "--lamb", GAN_RDLB_LAMB, "--checkpoint_dir", "{out}", "train", "--batchsize", k,
                       "--num_Ck_samples", 2, "--last_step", last, "--checkpoint_interval", last, "--y_init", "quick",
                       "--y_quick_topn", 3, *(("--lr", 3e-4, "--anneal_lamb", "--target_lambs", 300)
                                                 if tier == "cpu" else ())))
    for seed in (0,) if smoke else (0, 1):
        steps.append(step("rdlb.py", "--seed", seed, *lb[1:], "eval", "--batchsize", 32 if smoke else 2 * k,
                          "--num_Ck_samples", 2 if smoke else 4, "--y_init", "exhaustive",
                          "--ckpt", "{out}/" + GAN_LB_RUN.format(k=k, step=last)))
    return steps + [step("plot_rd.py", "--checkpoint_dir", "{out}", "--out", "{out}/figure",
                         "--title", "lowgan, d = 2: the image sandwich")]


def lowgan_read(out):
    """Each upper bound's R + lamb D (nats per image, MSE on [0, 1]) beside the lower bound's intercept."""
    lbs = last_per(records(out, "rdlb"), lambda r: r.get("seed", 0))
    lb = min(lbs, key=lambda r: r["R_lb_hi"]) if lbs else None
    ubs = []
    for method, label in (("resnet_vae", "upper bound (resnet_vae.py)"), ("mbt2018", "mbt2018.py"),
                          ("ms2020", "ms2020.py")):
        for r in last_per(records(out, method), lambda r: r["rdlb_lamb"]):
            ubs.append(Row(f"R + {r['rdlb_lamb']:.0f} D", label, r["rdlb_lagrangian"],
                           lb["R_lb"] if lb else None, "lower bound" if lb else "", r["rdlb_lagrangian_stderr"],
                           "nats per image", note=f"{r['bpp']:.2e} bpp, {r['psnr']:.1f} dB"))
    rows = []
    best = min((u.value for u in ubs), default=None)
    for r in lbs:
        rows.append(Row(f"R + {r['lamb']:.0f} D", "lower bound (rdlb.py, CNN)", r["R_lb"], best,
                        "best upper bound" if best is not None else "", ci_half(r), "nats per image",
                        note=f"seed {r['seed']}, k = {r['batchsize']}"))
    return ubs + rows


LOWGAN_SANDWICH = Experiment(
    name="lowgan-sandwich", title="The image sandwich on a GAN-image source, d = 2",
    reproduces="the paper's GAN-image experiment (section 5) at d = 2 on the built-in lowgan stand-in: the ResNet-VAE "
               "upper bound, both codecs and the CNN lower bound at one slope (rdlb lamb = 1000)",
    commands=lowgan_steps,
    read=lowgan_read,
    notes={"cpu": "lowgan in place of BigGAN's basenji; a 4-level ResNet-VAE of 32 filters trained 3,000 steps, the "
                  "codecs at 64 filters 1,000 steps, the lower bound 500 steps at k = 256 annealed from lamb 300 "
                  "(the paper: 6 levels of 256 filters, 600,000 steps; the lower bound 4,000 steps at k = 2048)",
           "gpu": "lowgan in place of BigGAN's basenji (set --dataset basenji with the BigGAN module for the paper's "
                  "source)"},
)


# ---- natural images: Kodak -----------------------------------------------------------------------------------

KODAK_LAMBDAS = (0.0025, 0.01, 0.04)
PAPER_LAMBDAS = {"mbt2018.py": (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08),
                 "ms2020.py": (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08),
                 "resnet_vae.py": (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)}
# Each curve of this package beside the published curve of the same model (data/reference/image_rd.csv).
PUBLISHED = {"mbt2018": "mbt2018-mean (hyperprior, no context)", "ms2020": "ms2020 (channel-wise autoregressive)",
             "resnet_vae": "RD-sandwich upper bound (resnet_vae)"}
VTM = "VTM 18.0"


def kodak_steps(tier):
    smoke = tier == "smoke"
    # smoke: one image, so the eval's dataset is a Kodak subset and no BD-rate is computed
    dataset = "data/kodak/kodim01.png" if smoke else "kodak"
    lambdas = {"smoke": (0.01,), "cpu": KODAK_LAMBDAS}
    models = [
        ("mbt2018.py", {"smoke": ("--num_filters", 8), "cpu": ("--num_filters", 64), "gpu": ()}[tier],
         {"smoke": (1, 2), "cpu": (10, 300), "gpu": (600, 1000)}[tier], 5e-4),
        ("ms2020.py", {"smoke": ("--num_filters", 8, "--latent_depth", 16, "--hyperprior_depth", 8, "--num_slices",
                                 2, "--max_support_slices", 1),
                       "cpu": ("--num_filters", 64, "--latent_depth", 160, "--hyperprior_depth", 64),
                       "gpu": ()}[tier],
         {"smoke": (1, 2), "cpu": (10, 100), "gpu": (600, 1000)}[tier], 5e-4),
        ("resnet_vae.py", {"smoke": ("--latent_channels", "2,4", "--num_filters", 8),
                           "cpu": ("--latent_channels", "4,8,16,32", "--ar_prior_levels", 2, "--ar_slices", 4,
                                   "--num_filters", 64),
                           "gpu": ("--latent_channels", "4,8,16,32,64,128", "--ar_prior_levels", 4, "--ar_slices", 8,
                                   "--num_filters", 256)}[tier],
         {"smoke": (1, 2), "cpu": (20, 100), "gpu": (600, 10000)}[tier], 3e-4),
    ]
    steps = []
    for script, arch, (epochs, per_epoch), lr in models:
        for lamb in lambdas.get(tier, PAPER_LAMBDAS[script]):
            model = (script, "--checkpoint_dir", "{out}", *arch, "--lambda", lamb)
            if tier == "gpu":
                schedule = ("--dataset", "cocotrain", "--patchsize", 256, "--batchsize", 8, "--warmup", 400,
                            "--patience", 20)
            else:
                schedule = ("--dataset", "bsds500", "--patchsize", 64 if smoke else 128, "--batchsize", 8,
                            "--lr", lr, "--lr_schedule", "step", "--max_validation_steps", 1 if smoke else 4)
            steps += [train(*model, "train", "--epochs", epochs, "--steps_per_epoch", per_epoch, *schedule),
                      step(*model, "eval", "--dataset", dataset)]
            if tier == "gpu":
                steps.append(step(*model, "eval", "--dataset", "tecnick"))
    return steps


def kodak_read(out):
    """Each model's BD-rate against VTM 18.0 on Kodak, beside the BD-rate of the paper's published curve of the
    same model; PCHIP, since a CPU curve has three points (the cubic needs four)."""
    import bd_rate  # the published curves and their reader
    from utils.rd import bd_rate as bd

    table = bd_rate.read_reference(bd_rate.DEFAULT_REFERENCE)
    vtm = bd_rate.published(table, "kodak", VTM, "--anchor")
    rows = []
    for method, name in PUBLISHED.items():
        recs = last_per(records(out, method), lambda r: float(r["lambda"]))
        whole = [r for r in recs if r.get("dataset") == "kodak"]
        for r in recs:
            rows.append(Row(f"lambda = {r['lambda']:g} on {r['dataset']}", f"{method}.py", r["psnr"], None, "", None,
                            "dB PSNR", note=f"{r['bpp']:.4f} bpp"))
        if len(whole) >= 2:
            paper = bd_rate.published(table, "kodak", name, "--test")
            ref = bd(vtm.bpp, vtm.psnr, paper.bpp, paper.psnr, "pchip")
            ours = bd(vtm.bpp, vtm.psnr, [r["bpp"] for r in whole], [r["psnr"] for r in whole], "pchip")
            rows.append(Row("BD-rate against VTM 18.0 on Kodak", f"{method}.py", ours, ref, f"published: {name}",
                            None, "%"))
    return rows


def kodak_draw(out, png):
    """PSNR against bpp on Kodak: this package's curves beside the published ones of the same models and VTM."""
    import bd_rate
    from utils.plotting import plot_rd

    table = bd_rate.read_reference(bd_rate.DEFAULT_REFERENCE)
    curves = []
    for name in (VTM, *PUBLISHED.values()):
        c = bd_rate.published(table, "kodak", name, "--test")
        curves.append({"label": f"{name} (published)", "D": c.bpp, "R": c.psnr})
    for method in PUBLISHED:
        recs = [r for r in last_per(records(out, method), lambda r: float(r["lambda"])) if r["dataset"] == "kodak"]
        recs.sort(key=lambda r: r["bpp"])
        if recs:
            curves.append({"label": f"{method}.py (this package)", "D": [r["bpp"] for r in recs],
                           "R": [r["psnr"] for r in recs], "marker": "o"})
    plot_rd(curves, png, xlabel="bits per pixel", ylabel="PSNR (dB)", title="Kodak")


KODAK = Experiment(
    name="kodak-cpu", title="Natural images: the codecs and the bound on Kodak",
    reproduces="the paper's natural-image experiment (section 6): mbt2018, ms2020 and the ResNet-VAE upper bound on "
               "Kodak, as BD-rates against VTM 18.0 beside the paper's published curves",
    commands=kodak_steps,
    read=kodak_read, figure=False, draw=kodak_draw, needs=("kodak", "bsds500"),
    notes={"cpu": "BSDS500 crops of 128 px in place of COCO's 256; three lambdas; mbt2018 and ms2020 at 64 filters "
                  "(ms2020 latent depth 160) trained 3,000 and 1,000 steps, the ResNet-VAE 4 levels of 64 filters "
                  "2,000 steps (the paper: 6 levels of 256 filters, 6 million steps): the curves show what a CPU "
                  "budget reaches, far from the paper's; about 2.5 hours on 2 cores, beyond the hour the other "
                  "experiments keep to",
           "gpu": "COCO crops need prepare_imgs.py first (docs/codecs.md); the paper evaluates Tecnick as well"},
)

EXPERIMENTS = [LOWGAN_SANDWICH, KODAK]
