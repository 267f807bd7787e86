"""Speed of Blahut-Arimoto: the separable fast form against the dense |X| x |Y| form.

    RDS_DATA_DIR=/path/to/data python bench/ba_bench.py

1. Physics 2-d marginal, 60 bins per dimension, lamb = 1000: iterations/s of both forms over the same
   iterations, their ratio, and the largest relative |dR| and |dD| between them along the trajectory.
2. A 3-d Gaussian (1e5 samples), 50 bins per dimension (125,000 grid points; the dense matrix would take
   |X| x 125,000 doubles): wall time of 2000 iterations of the fast form.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.ba import Histogram, memory_needed, run_ba  # noqa: E402
from utils.sources import load_samples  # noqa: E402


def timed_trajectory(hist, lamb, steps, method):
    records = []
    start = time.perf_counter()
    run_ba(hist, lamb, steps, 0.0, method, None, lambda step, r: records.append(r))
    return time.perf_counter() - start, records


def main():
    physics = Path(os.environ.get("RDS_DATA_DIR", "data")) / "physics" / "n=2-ppzee-split=test.npy"
    samples = load_samples(physics)
    hist = Histogram(samples, 60)
    steps_dense, steps_fast = 100, 2000
    t_dense, dense = timed_trajectory(hist, 1000.0, steps_dense, "dense")
    t_fast, fast = timed_trajectory(hist, 1000.0, steps_fast, "fast")
    rel = lambda key: max(abs(f[key] - d[key]) / abs(d[key]) for f, d in zip(fast, dense))
    ips_dense, ips_fast = steps_dense / t_dense, steps_fast / t_fast
    print(f"physics 2-d, 60 bins ({int(hist.occupied.sum())} occupied x 3600 grid points), lamb=1000:")
    print(f"  dense: {ips_dense:9.1f} it/s   fast: {ips_fast:9.1f} it/s   ratio: {ips_fast / ips_dense:.0f}x")
    print(f"  max relative |dR| = {rel('R'):.1e}, |dD| = {rel('D'):.1e} over {steps_dense} iterations")

    x = np.random.default_rng(0).standard_normal((100000, 3))
    hist3 = Histogram(x, 50)
    t3, rec3 = timed_trajectory(hist3, 10.0, 2000, "fast")
    dense_gib = memory_needed("dense", 50, 3, int(hist3.occupied.sum())) / 2**30
    print(f"gaussian 3-d, 50 bins (125000 grid points, {int(hist3.occupied.sum())} occupied; dense would need "
          f"~{dense_gib:.0f} GiB):")
    print(f"  fast: 2000 iterations in {t3:.1f} s ({2000 / t3:.0f} it/s); R={rec3[-1]['R']:.5f} D={rec3[-1]['D']:.5f}")


if __name__ == "__main__":
    main()
