"""The measurements behind minibert.fast's two size rules, rerunnable on any machine.

    python benchmarks/tune_fast.py [--models bert-tiny bert-mini ... MiniLM-L6] [--repeats 3]

1. ``PARALLEL_MIN_MACS``: ``fast.linear_rows``'s product on Numba's threads against the same
   loops on one thread, for products around the rule (rows x weight elements multiply-adds).
2. ``takes_layer_small`` (``SMALL_ROWS``, and one sequence of any length): a whole pass with
   every layer in ``layer_small`` against every layer in ``layer_large``, from 8 rows to one
   sequence of 512 tokens and a batch of 8 x 128, on each preset shape and MiniLM-L6's (seeded
   random weights; speed does not depend on the values). Each side runs in its own processes,
   alternating: after a BLAS product OpenBLAS's idle worker spins on the second core for a
   while, and Numba's threads timed in the same process would wait for it.
3. What the fast path costs in rounding: max |fast - step| / max(1, max |step|) of the last
   hidden state, float32 and float64, on the same models and inputs (the bound tested in
   tests/test_fast.py is ``fast.FLOAT32_BOUND`` / ``fast.FLOAT64_BOUND``).

Median microseconds (1.) or milliseconds (2.) of alternating blocks (1.) or processes (2.), so
that both sides see the same machine noise. Like ``bench.py``, it removes ``OPENBLAS_CORETYPE``
and ``OPENBLAS_L2_SIZE`` from its own environment before NumPy loads OpenBLAS (see
docs/performance.md).
"""

import os
import sys

if any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)  # before NumPy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
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
MODELS = [*PRESETS, "MiniLM-L6"]  # MiniLM-L6: all-MiniLM-L6-v2's shape, 12 heads of 32
PRODUCTS = [(2, 128, 128), (4, 128, 128), (8, 128, 128), (1, 256, 256), (8, 128, 512), (1, 512, 512), (8, 512, 512)]
ROWS = [(1, 8), (1, 16), (2, 16), (1, 64), (2, 64), (1, 128), (1, 512), (2, 128), (8, 128)]


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


def config_of(name):
    if name == "MiniLM-L6":
        return minibert.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    return minibert.BertConfig.preset(name)


def seeded(name, dtype="float32"):
    config = config_of(name)
    rng = np.random.default_rng(0)
    weights = {tensor: 0.05 * rng.standard_normal(shape) for tensor, shape in encoder_shapes(config).items()}
    return minibert.BertModel(config, weights, dtype=dtype, backend="numba")


def one_side(name, side):
    """(In a child process.) {"BxT": median seconds of one pass} with every layer in layer_``side``."""
    fast.takes_layer_small = lambda B, T, H: side == "small"  # read by fast.forward on every call
    model = seeded(name)
    times = {}
    for B, T in ROWS:
        ids = np.random.default_rng(0).integers(1000, 2000, (B, T))
        times[f"{B}x{T}"] = median_time(partial(model, ids), seconds=0.5)
    return times


def rows(models, repeats):
    print("2. layer_small against layer_large (ms per pass), each side in its own processes;"
          f" the rule: up to SMALL_ROWS = {fast.SMALL_ROWS} rows, or B = 1 from H = {fast.ONE_SEQUENCE_MIN_HIDDEN}")
    for name in models:
        blocks = {"small": [], "large": []}
        for _ in range(repeats):
            for side in blocks:
                child = subprocess.run([sys.executable, __file__, "--child", name, side],
                                       check=True, capture_output=True, text=True)
                blocks[side].append(json.loads(child.stdout.splitlines()[-1]))
        for B, T in ROWS:
            small, large = (float(np.median([times[f"{B}x{T}"] for times in blocks[side]])) for side in blocks)
            rule = "layer_small" if fast.takes_layer_small(B, T, config_of(name).hidden_size) else "layer_large"
            print(f"   {name:12} ({B}, {T}): layer_small {small * 1e3:8.3f}  layer_large {large * 1e3:8.3f}"
                  f"  small / large {small / large:.2f}  (the rule: {rule})")


def rounding(models):
    print("3. max |fast - step| / max(1, max |step|), last hidden state")
    for name in models:
        for dtype in ("float32", "float64"):
            model = seeded(name, dtype)
            errors = {"layer_small": [], "layer_large": []}
            for B, T in ROWS + [(4, 128)]:
                ids = np.random.default_rng(B * T).integers(1000, 2000, (B, T))
                fast_out = model(ids).last_hidden_state
                model.use_fast_path = False
                step_out = model(ids).last_hidden_state
                model.use_fast_path = True
                scale = max(1.0, float(np.abs(step_out).max()))
                path = "layer_small" if fast.takes_layer_small(B, T, model.config.hidden_size) else "layer_large"
                errors[path].append(float(np.abs(fast_out.astype(np.float64) - step_out).max()) / scale)
            print(f"   {name:12} {dtype}: layer_small {max(errors['layer_small']):.1e},"
                  f" layer_large {max(errors['layer_large']):.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    parser.add_argument("--repeats", type=int, default=3, help="alternating blocks or processes per measurement")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one side of part 2, in its own process
        print(json.dumps(one_side(*args.child)))
        return
    products(args.repeats)
    rows(args.models, args.repeats)
    rounding(args.models)


if __name__ == "__main__":
    main()
