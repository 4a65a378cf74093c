"""Where a forward pass spends its time: wall time per backend function, summed over a call.

    python benchmarks/profile_ops.py MODEL.h5 [--backend numba] [--batch 32] [--seq 128] [--reps 10]

Every function of the backend module (``ops`` or ``kernels``) is wrapped with a timer, the
model is run ``--reps`` times, and the mean time per forward pass of each function is printed
(the rest of the total is Python glue: the taps, reshapes, the embedding sum, the pooler).
"""

import argparse
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import minibert  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("h5", type=Path)
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()

    model = minibert.load(args.h5, backend=args.backend)
    ids = np.random.default_rng(0).integers(1000, 20000, size=(args.batch, args.seq))
    model(ids)  # compile / warm up
    spent = defaultdict(float)
    timed = types.SimpleNamespace()
    for name in dir(model.F):
        f = getattr(model.F, name)
        if callable(f) and not name.startswith("_"):
            def wrapper(*a, _f=f, _name=name, **k):
                t0 = time.perf_counter()
                result = _f(*a, **k)
                spent[_name] += time.perf_counter() - t0
                return result
            setattr(timed, name, wrapper)
    model.F = timed
    t0 = time.perf_counter()
    for _ in range(args.reps):
        model(ids)
    total = (time.perf_counter() - t0) / args.reps * 1e3
    print(f"{args.h5.name} backend={args.backend} [B={args.batch}, T={args.seq}]: {total:.3f} ms per forward pass")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        ms = s / args.reps * 1e3
        print(f"  {name:<22} {ms:9.3f} ms  {100 * ms / total:5.1f}%")
    print(f"  {'(python glue)':<22} {total - sum(spent.values()) / args.reps * 1e3:9.3f} ms")


if __name__ == "__main__":
    main()
