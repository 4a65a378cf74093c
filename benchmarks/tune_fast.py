"""The measurements behind minibert.fast's two size rules, rerunnable on any machine.

    python benchmarks/tune_fast.py [--models bert-tiny bert-mini ...] [--repeats 5]

1. ``PARALLEL_MIN_MACS``: ``fast.linear_rows``'s product on Numba's threads against the same
   loops on one thread, for products around the rule (rows x weight elements multiply-adds).
2. ``SMALL_ROWS``: a whole pass with every layer in ``layer_small`` against every layer in
   ``layer_large``, for B*T from 8 to 64 rows, on each preset shape (seeded random weights;
   speed does not depend on the values).
3. What the fast path costs in rounding: max |fast - step| / max(1, max |step|) of the last
   hidden state, float32 and float64, on the same models and inputs (the bound tested in
   tests/test_fast.py is ``fast.FLOAT32_BOUND`` / ``fast.FLOAT64_BOUND``).

Median microseconds (1.) or milliseconds (2.) of alternating blocks, so that both sides see the
same machine noise. Like ``bench.py``, it removes ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
from its own environment before NumPy loads OpenBLAS (see docs/performance.md).
"""

import os
import sys

if any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)  # before NumPy is imported

import argparse  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import minibert  # noqa: E402
from minibert import fast  # noqa: E402
from minibert.weights import encoder_shapes  # noqa: E402

PRESETS = ["bert-tiny", "bert-mini", "bert-small", "bert-medium"]
PRODUCTS = [(2, 128, 128), (4, 128, 128), (8, 128, 128), (1, 256, 256), (8, 128, 512), (1, 512, 512), (8, 512, 512)]
ROWS = [(1, 8), (1, 12), (1, 16), (2, 16), (1, 32), (1, 64)]


def median_time(f, seconds=0.2):
    """Median seconds of one call of f, over about ``seconds`` of calls."""
    f()
    start = time.perf_counter()
    f()
    n = int(max(5, min(2000, seconds / max(time.perf_counter() - start, 1e-7))))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def alternate(functions, repeats):
    """{name: median of ``repeats`` blocks' median times}, the functions' blocks alternating."""
    blocks = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            blocks[name].append(median_time(f))
    return {name: float(np.median(times)) for name, times in blocks.items()}


@njit(parallel=fast.PRANGE_ONLY)
def _threads(x, weight, out):  # linear_rows' loops on Numba's threads, whatever the size
    fast._linear_rows_blocks(x, weight, out)


def product(core, x, weight, out):
    out[...] = 0  # the loops add to out
    core(x, weight, out)


def products(repeats):
    print("1. linear_rows on Numba's threads against one thread (us); PARALLEL_MIN_MACS =",
          f"2^{fast.PARALLEL_MIN_MACS.bit_length() - 1}")
    rng = np.random.default_rng(0)
    for rows, inputs, features in PRODUCTS:
        x = rng.standard_normal((rows, inputs)).astype(np.float32)
        w = rng.standard_normal((features, inputs)).astype(np.float32)
        out = np.zeros((rows, features), np.float32)

        t = alternate({"threads": partial(product, _threads, x, w, out),
                       "one thread": partial(product, fast._linear_rows_serial, x, w, out)}, repeats)
        macs = rows * inputs * features
        print(f"   [{rows}, {inputs}] @ [{inputs}, {features}]  2^{np.log2(macs):.0f} multiply-adds:"
              f"  threads {t['threads'] * 1e6:6.1f}  one thread {t['one thread'] * 1e6:6.1f}")


def seeded(preset, dtype="float32"):
    config = minibert.BertConfig.preset(preset)
    rng = np.random.default_rng(0)
    weights = {name: 0.05 * rng.standard_normal(shape) for name, shape in encoder_shapes(config).items()}
    return minibert.BertModel(config, weights, dtype=dtype, backend="numba")


def run_with_rows(limit, model, ids):
    fast.SMALL_ROWS = limit  # read by fast.forward on every call
    model(ids)


def rows(models, repeats):
    print(f"2. layer_small against layer_large (ms per pass); SMALL_ROWS = {fast.SMALL_ROWS}")
    rule = fast.SMALL_ROWS
    try:
        for preset in models:
            model = seeded(preset)
            for B, T in ROWS:
                ids = np.random.default_rng(0).integers(1000, 2000, (B, T))

                t = alternate({"small": partial(run_with_rows, B * T, model, ids),
                               "large": partial(run_with_rows, B * T - 1, model, ids)}, repeats)
                print(f"   {preset:12} ({B}, {T}): layer_small {t['small'] * 1e3:7.3f}  layer_large"
                      f" {t['large'] * 1e3:7.3f}  small / large {t['small'] / t['large']:.2f}")
    finally:
        fast.SMALL_ROWS = rule


def rounding(models):
    print("3. max |fast - step| / max(1, max |step|), last hidden state")
    for preset in models:
        for dtype in ("float32", "float64"):
            model = seeded(preset, dtype)
            errors = []
            for B, T in ROWS + [(1, 128), (4, 128)]:
                ids = np.random.default_rng(B * T).integers(1000, 2000, (B, T))
                fast_out = model(ids).last_hidden_state
                model.use_fast_path = False
                step_out = model(ids).last_hidden_state
                model.use_fast_path = True
                scale = max(1.0, float(np.abs(step_out).max()))
                errors.append(float(np.abs(fast_out.astype(np.float64) - step_out).max()) / scale)
            print(f"   {preset:12} {dtype}: up to 64 rows (layer_small) {max(errors[:len(ROWS)]):.1e},"
                  f" 128 and 512 rows (layer_large) {max(errors[len(ROWS):]):.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=PRESETS, choices=PRESETS)
    parser.add_argument("--repeats", type=int, default=5, help="alternating blocks per measurement")
    args = parser.parse_args()
    products(args.repeats)
    rows(args.models, args.repeats)
    rounding(args.models)


if __name__ == "__main__":
    main()
