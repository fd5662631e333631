"""TSNEkhorn end to end on a synthetic Gaussian mixture: time, peak memory, 10-NN accuracy.

Prints one markdown row: ``| n | time (s) | peak RSS (GB) | 10-NN accuracy |``. The
mixture has 20 components in 50 dimensions (centres ~ N(0, 9 I), unit-variance points);
the accuracy is the mean 5-fold cross-validated accuracy of a 10-NN classifier on the 2-D
embedding (on a 10,000-point sample above that size), as everywhere in the package.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/tsnekhorn_scale.py [n] [max_iter]
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np


def mixture(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of a 20-component Gaussian mixture in 50 dimensions, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(20, 50))
    labels = rng.integers(0, 20, size=n)
    x = centres[labels] + rng.normal(size=(n, 50))
    return x.astype(np.float32), labels


def main() -> None:
    import torchdr_sc as tdr
    from torchdr_sc.quality import knn_label_accuracy

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    max_iter = int(sys.argv[2]) if len(sys.argv) > 2 else None
    x, labels = mixture(n)
    est = tdr.TSNEkhorn(random_state=0, max_iter=max_iter, verbose=True)
    t0 = time.perf_counter()
    z = est.fit_transform(x)
    elapsed = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    sample = np.random.default_rng(1).permutation(n)[: min(n, 10_000)]
    acc = knn_label_accuracy(z[sample], labels[sample])
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in est.timings_.items())
    print(f"stages: {stages}; repulsion: {est.repulsion_used_}; iterations: {est.n_iter_}")
    print("| n | time (s) | peak RSS (GB) | 10-NN accuracy |")
    print("|---|---|---|---|")
    print(f"| {n:,} | {elapsed:.0f} | {peak_gb:.2f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
