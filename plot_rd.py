"""Collects the results of a sweep into one CSV and one R-D plot: the sandwich.

    python plot_rd.py --checkpoint_dir checkpoints/banana --out results/banana

Reads every `results.jsonl` below --checkpoint_dir (BA, upper bounds, NTC, lower bounds). Runs that differ only in
lambda form one curve, labelled by method and the rest of the run name. Lower-bound intercepts R_lb(lambda)
become the curve R_L(D) = max_lambda (R_lb - lambda D), with a band from their 95% intervals; evaluations of one
estimator at one lambda (seeds) pool their draws first. Where the runs'
source is a Gaussian (read from their flags.json), the analytic R(D) is drawn too.

Rates are converted to nats per sample (or --bits, --rpd per dimension); D is the MSE per dimension. The image
models' records (bits per pixel, MSE on [0, 255]) become nats per image and MSE on [0, 1], rdlb.py's units, so a
folder of GAN-source runs gives the image sandwich.
Writes <out>.csv and <out>.png.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import csv
import io
import math
import re
import sys
from pathlib import Path

import numpy as np

from utils import cli, jsonl, runs
from utils.rd import gaussian_rd_curve, lb_interval, lb_xi, lower_bound_curve
from utils.sources import load_gaussian_params

LAMBDA_KEY = re.compile(r"-(lamb|lambda|lmbda)=[^-]+")
NAMES = {"ba": "Blahut-Arimoto", "rdub": "upper bound (beta-VAE)", "ntc": "NTC (upper bound)",
         "rdlb": "lower bound", "mbt2018": "mbt2018", "ms2020": "ms2020", "resnet_vae": "upper bound (ResNet-VAE)",
         "wgd": "upper bound (WGD)"}


def rate_in_nats(record, rate):
    """A record's rate as nats per sample (per image for the image models' bits per pixel)."""
    rate = rate * (math.log(2.0) if record.get("rate_unit") == "bits" else 1.0)
    if record.get("per_pixel"):
        if record.get("data_dim") is None:
            raise cli.InputError(f"{record.get('run')}: an image evaluation over images of several sizes has no "
                                 "rate per image; plot_rd.py draws fixed-size sources (e.g. the GAN sources)")
        return rate * record["data_dim"] / 3
    return rate * (record["data_dim"] if record.get("per_dim") else 1.0)


def distortion(record):
    """A record's MSE per dimension, on [0, 1] for the image models (which measure it on [0, 255])."""
    return record["mse"] / 255.0 ** 2 if record.get("per_pixel") else record["mse"]


RATE_KEYS = ("rate", "R", "R_lb")  # the rate of a record of each kind: upper bounds and codecs, BA and WGD, rdlb


def collect(root):
    """{label: [records]} for every results.jsonl under root, with the run's flags in record['_flags'].

    Runs that differ only in lambda form one group. A method with one group is labelled by its name; with
    several, by its name and the rest of the run name.
    """
    groups = {}
    for path in sorted(Path(root).rglob("results.jsonl")):
        flags = runs.load_flags(path.parent)
        config = LAMBDA_KEY.sub("", path.parent.name)
        for record in jsonl.read(path):
            if any(k in record and record[k] is None for k in RATE_KEYS):  # a non-finite estimate is written null
                print(f"note: {path}: a record without a finite rate (a diverged run?) is left out", file=sys.stderr)
                continue
            key = (record.get("method", "?"), config)
            groups.setdefault(key, []).append({**record, "_flags": flags, "_dir": path.parent})
    per_method = {}
    for method, _ in groups:
        per_method[method] = per_method.get(method, 0) + 1
    return {(NAMES.get(m, m) if per_method[m] == 1 else f"{NAMES.get(m, m)}: {c}"): recs
            for (m, c), recs in groups.items()}


def gaussian_variances(groups):
    """Variances of the Gaussian source the runs used, or None (also None if runs disagree)."""
    found = set()
    for records in groups.values():
        for r in records:
            f = r["_flags"]
            if f.get("dataset") == "gaussian" or f.get("samples") == "gaussian":
                found.add((f.get("gparams_path"), r["data_dim"]))
    if len(found) != 1:
        return None
    gparams, dim = found.pop()
    if gparams:
        return load_gaussian_params(gparams, dim)[1] ** 2
    return np.ones(dim)


def pool_lower_bounds(records):
    """One record per estimator and lambda, sorted by lambda: evaluations of one estimator (the same checkpoint,
    k and y_init) at one lambda, e.g. several seeds, pool their draws into one estimate (the mean of xi over all
    draws, alpha leave-one-out over all of them) with its interval (`utils.rd.lb_interval`).

    A .npz named by several records is counted once. Pooling needs every record's draws: a record without its .npz
    is refused, rather than left beside the others for the curve to take the largest (which biases the bound up).
    Different estimators at one lambda stay separate lines."""
    groups = {}
    for r in records:
        ckpt = Path(r["ckpt"]).name if r.get("ckpt") else None  # its run folder is r["_dir"]; the path may be relative
        key = (r["lamb"], str(r["_dir"]), ckpt, r.get("batchsize"), r.get("y_init"))
        groups.setdefault(key, []).append(r)
    pooled = []
    for _, recs in sorted(groups.items(), key=lambda kv: kv[0][0]):
        if len(recs) == 1:
            pooled.append(recs[0])  # a lone evaluation keeps its own figures
            continue
        files = {}
        for r in recs:
            path = (r["_dir"] / r["npz"]).resolve() if r.get("npz") else None
            if path is None or not path.exists():
                raise cli.InputError(f"{r['_dir'] / 'results.jsonl'}: the rdlb record at lamb={r['lamb']} "
                                     f"(seed {r.get('seed')}) has no draws to pool "
                                     f"({path or 'no npz field'} is missing); restore or re-run its eval")
            files[path] = r  # a file evaluated twice (the same seed re-run) holds the last run's draws
        if len(files) == 1:
            pooled.append(r)
            continue
        log_ck, nlu = [], []
        for path in files:
            with np.load(path) as data:
                if "log_Ck" not in data or "neg_log_u" not in data:
                    raise cli.InputError(f"{path}: no log_Ck / neg_log_u draws to pool; re-run its rdlb eval")
                log_ck.append(data["log_Ck"].ravel())
                nlu.append(data["neg_log_u"].ravel())
        log_ck, nlu = np.concatenate(log_ck), np.concatenate(nlu)
        xi, _ = lb_xi(log_ck, nlu)
        ci = lb_interval(log_ck, nlu)
        pooled.append({**recs[0], "R_lb": float(xi.mean()), "R_lb_stderr": float(xi.std(ddof=1) / math.sqrt(xi.size)),
                       "R_lb_lo": ci["lo"], "R_lb_hi": ci["hi"], "num_xi": int(xi.size), "num_files": len(files)})
    return pooled


def build_curves(groups, scale):
    """Plot curves and CSV rows. `scale` converts nats per sample into the plotted unit."""
    curves, rows, lower = [], [], []
    for label, records in sorted(groups.items()):
        method = records[0].get("method")
        if method == "rdlb":
            records = pool_lower_bounds(records)
            for r in records:
                rows.append({"label": label, "method": method, "lamb": r["lamb"], "D": "",
                             "R": r["R_lb"] * scale, "R_lo": r["R_lb_lo"] * scale, "R_hi": r["R_lb_hi"] * scale})
            lower.append((label, records))
            continue
        pts = []
        for r in sorted(records, key=lambda r: r.get("lamb", r.get("lambda", 0.0))):
            if method == "ba":
                D, R, err = r["D"], rate_in_nats(r, r["R"]), 0.0
            elif method == "wgd":  # wgd.py's records: R, D (nats per sample, MSE) with standard errors
                D, R, err = r["D"], r["R"], r["R_stderr"]
            else:
                D, R, err = distortion(r), rate_in_nats(r, r["rate"]), rate_in_nats(r, r.get("rate_stderr", 0.0))
            pts.append((D, R * scale, err * scale, r.get("lamb", r.get("lambda"))))
            rows.append({"label": label, "method": method, "lamb": pts[-1][3], "D": D, "R": R * scale,
                         "R_lo": (R - 2 * err) * scale, "R_hi": (R + 2 * err) * scale})
        pts.sort()
        D, R, err, _ = map(np.array, zip(*pts))
        curves.append({"label": label, "D": D, "R": R, "yerr": err if err.any() else None,
                       "style": "line" if method == "ba" else "points", "marker": "o"})
    return curves, rows, lower


def lower_curves(lower, d_grid, scale):
    curves = []
    for label, records in lower:
        lambs = [r["lamb"] for r in records]
        curve = {"label": label, "D": d_grid,
                 "R": lower_bound_curve(lambs, [r["R_lb"] for r in records], d_grid) * scale,
                 "band": (lower_bound_curve(lambs, [r["R_lb_lo"] for r in records], d_grid) * scale,
                          lower_bound_curve(lambs, [r["R_lb_hi"] for r in records], d_grid) * scale)}
        curves.append(curve)
    return curves


def main(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint_dir", required=True, help="folder searched (recursively) for results.jsonl")
    p.add_argument("--out", help="output prefix (default: <checkpoint_dir>/rd)")
    p.add_argument("--bits", action="store_true", help="plot rates in bits instead of nats")
    p.add_argument("--rpd", action="store_true", help="plot rates per data dimension")
    p.add_argument("--logx", action="store_true", help="logarithmic distortion axis")
    p.add_argument("--logy", action="store_true", help="logarithmic rate axis")
    p.add_argument("--title", help="the plot's title (default: none)")
    args = p.parse_args(argv)

    if not Path(args.checkpoint_dir).is_dir():
        raise cli.InputError(f"--checkpoint_dir {args.checkpoint_dir} is not a folder")
    out = Path(args.out) if args.out else Path(args.checkpoint_dir) / "rd"
    csv_path = cli.output_file(out.with_suffix(".csv"), "--out")
    png_path = cli.output_file(out.with_suffix(".png"), "--out")
    groups = collect(args.checkpoint_dir)
    if not groups:
        raise cli.InputError(f"no results.jsonl under {args.checkpoint_dir}: run the scripts' eval (or ba.py) first")
    dims = {r["data_dim"] for records in groups.values() for r in records}
    if args.rpd and len(dims) != 1:
        raise cli.InputError(f"--rpd needs runs of one data dimension; found {sorted(dims)}")
    scale = (1 / math.log(2.0) if args.bits else 1.0) / (dims.pop() if args.rpd else 1.0)

    curves, rows, lower = build_curves(groups, scale)
    d_values = np.concatenate([c["D"] for c in curves]) if curves else np.array([])
    var = gaussian_variances(groups)
    if var is not None:
        D, R = gaussian_rd_curve(var, num=300)
        curves.insert(0, {"label": "analytic R(D)", "D": D, "R": R * scale})
        d_values = np.concatenate([d_values, D])
    if lower:
        # The lower-bound curve spans the other curves' D and each line's zero crossing R_lb / lambda.
        lambs = np.array([r["lamb"] for _, rec in lower for r in rec])
        crossings = np.array([max(r["R_lb"], 0.0) for _, rec in lower for r in rec]) / lambs
        d_values = np.concatenate([d_values, crossings, [0.01 / lambs.max()]])
        d_grid = np.geomspace(d_values[d_values > 0].min(), d_values.max(), 300)
        curves += lower_curves(lower, d_grid, scale)

    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["label", "method", "lamb", "D", "R", "R_lo", "R_hi"])
    writer.writeheader()
    writer.writerows(rows)
    unit = ("bits" if args.bits else "nats") + (" per dimension" if args.rpd else " per sample")
    from utils.plotting import plot_rd  # matplotlib: imported only to draw (--help answers at once)
    png = io.BytesIO()
    plot_rd(curves, png, xlabel="D (MSE per dimension)", ylabel=f"R ({unit})", title=args.title, logx=args.logx,
            logy=args.logy, fmt="png")
    # Both drawn before either is written: a failure leaves neither.
    runs.atomic_write_text(csv_path, table.getvalue())
    runs.atomic_write_bytes(png_path, png.getvalue())
    print(f"wrote {csv_path} and {png_path} ({len(rows)} points, {len(curves)} curves)")


if __name__ == "__main__":
    cli.run(main)
