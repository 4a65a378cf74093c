"""Start-up time of `minibert.load(h5)(ids)` in a fresh process: cold and cached Numba cache.

    python benchmarks/startup.py MODEL.h5 [--runs 3]

Cold: NUMBA_CACHE_DIR points at an empty temporary directory, so every kernel is compiled.
Cached: a second process with the same NUMBA_CACHE_DIR loads the compiled kernels from disk.
Each run reports the wall time of the whole process and, inside it, the time of
`import minibert`, `minibert.load(...)` and the first forward pass of a [1, 8] input; "rest"
is the remainder: starting the interpreter, and its exit. Medians, and the fastest process
(on a shared machine the spread is wide: some runs are 1.5x slower).

The child processes run as a user's would: without PYTHONDONTWRITEBYTECODE (this project's
machines set it), so minibert's modules are compiled to .pyc once (in minibert/__pycache__,
as `pip install` does at install time) and read from there afterwards; and without
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (see bench.py). Tests never do this.
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

# What a user's environment does not set (see the module docstring).
NOT_A_USERS_SETTING = ("PYTHONDONTWRITEBYTECODE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ROOT = Path(__file__).resolve().parents[1]  # the checkout whose minibert is measured


def run(h5, backend, cache_dir):
    env = {name: value for name, value in os.environ.items() if name not in NOT_A_USERS_SETTING}
    env.update(NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    out = subprocess.run(  # in ROOT: `python -c` puts the current directory first on sys.path
        [sys.executable, "-c", CHILD, str(Path(h5).resolve()), backend],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    times = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(times, process_s=wall, rest_s=wall - sum(times.values()))


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
        f"{'case':<16} {'process s':>10} {'import s':>9} {'load s':>8} {'first call s':>13} {'rest s':>7} "
        f"{'fastest process s':>18}   (median of {args.runs}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})"
    )
    for case, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"{case:<16} {med['process_s']:>10.2f} {med['import_s']:>9.2f} {med['load_s']:>8.2f} "
            f"{med['first_call_s']:>13.3f} {med['rest_s']:>7.2f} {min(r['process_s'] for r in rs):>18.2f}"
        )


if __name__ == "__main__":
    main()
