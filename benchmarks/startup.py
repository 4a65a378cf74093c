"""Start-up time of `minibert.load(h5)(ids)` in a fresh process: cold and cached Numba cache.

    python benchmarks/startup.py MODEL.h5 [--runs 3]

Cold: NUMBA_CACHE_DIR points at an empty temporary directory, so every kernel is compiled.
Cached: a second process with the same NUMBA_CACHE_DIR loads the compiled kernels from disk.
Each run reports the wall time of the whole process and, inside it, the time of
`import minibert`, `minibert.load(...)` and the first forward pass of a [1, 8] input.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import minibert
t1 = time.perf_counter()
model = minibert.load(sys.argv[1], backend=sys.argv[2])
t2 = time.perf_counter()
model(np.arange(1000, 1008)[None, :])
t3 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, first_call_s=t3 - t2)))
"""


def run(h5, backend, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(h5), backend], env=env, check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), process_s=wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("h5", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {"cold (numba)": [], "cached (numba)": [], "numpy backend": []}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            results["cold (numba)"].append(run(args.h5, "numba", cache))
            results["cached (numba)"].append(run(args.h5, "numba", cache))
            results["numpy backend"].append(run(args.h5, "numpy", cache))
    print(
        f"{'case':<16} {'process s':>10} {'import s':>9} {'load s':>8} {'first call s':>13}   (median of {args.runs})"
    )
    for case, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"{case:<16} {med['process_s']:>10.2f} {med['import_s']:>9.2f} {med['load_s']:>8.2f} "
            f"{med['first_call_s']:>13.3f}"
        )


if __name__ == "__main__":
    main()
