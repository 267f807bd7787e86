"""Writes the parameters of a random diagonal Gaussian source, as the paper's 1000-d one was made.

    python gen_gaussian_params.py --save_dir data --dim 1000

Writes `<save_dir>/gaussian_params-dim=<dim>.npz` with `loc` ~ U(-0.5, 0.5), `var` ~ U(0, 2), `scale` = sqrt(var).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

from pathlib import Path

import numpy as np

from utils import cli, runs


def main(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--save_dir", default="data", help="folder of the .npz")
    p.add_argument("--dim", type=cli.positive_int, required=True, help="dimension of the source")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws of loc and var")
    args = p.parse_args(argv)
    cli.output_dir(args.save_dir, "--save_dir")
    rng = np.random.default_rng(args.seed)
    loc = rng.uniform(-0.5, 0.5, args.dim).astype(np.float32)
    var = rng.uniform(0.0, 2.0, args.dim).astype(np.float32)
    var = np.maximum(var, np.finfo(np.float32).tiny)  # U(0, 2) can return exactly 0
    path = Path(args.save_dir) / f"gaussian_params-dim={args.dim}.npz"
    runs.atomic_save_npz(path, loc=loc, var=var, scale=np.sqrt(var))
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
