"""Where the fast path's time goes: one layer of ``minibert.fast``, piece by piece.

    python benchmarks/profile_fast.py MODEL.h5 [--batch 1] [--seq 128] [--repeats 20]

Times a whole pass, one layer (``layer_small`` or ``layer_large``, whichever
``fast.takes_layer_small`` picks for the shape), and each piece of that layer called alone on
layer 0's weights: the six products, attention, and the fused bias / activation / LayerNorm
kernels. Products and attention are also given in multiply-adds per second. The pieces are
timed one at a time, so their sum differs from the layer's time by what running them together
costs or saves (caches, threads waking). Like ``bench.py``, the script removes
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` from its own environment before NumPy loads
OpenBLAS (docs/performance.md). For the step path's functions: ``profile_ops.py``.
"""

import os
import sys

if any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)  # before NumPy is imported

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import minibert  # noqa: E402
from minibert import fast, kernels, ops  # noqa: E402


def median_ms(run, repeats, warm_up_seconds=0.5):
    """Median milliseconds of one call of ``run``, after ``warm_up_seconds`` of calls (the first
    passes over a freshly loaded model's weights are slower: bert-small (1, 8) 6.7 ms for the
    first 20 after two calls, 2.6 ms later)."""
    run()
    deadline = time.perf_counter() + warm_up_seconds
    while time.perf_counter() < deadline:
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("h5", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    model = minibert.load(args.h5, backend="numba")
    c, B, T = model.config, args.batch, args.seq
    H, inner, A, D = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.head_size
    N = B * T  # rows
    ids = np.random.default_rng(0).integers(1000, min(c.vocab_size, 20000), (B, T))
    small = fast.takes_layer_small(B, T, H)
    layer = fast.layer_small if small else fast.layer_large
    w = fast.layer_weights(model.weights, 0)
    (wq, bq, wk, bk, wv, bv, wo, bo, ln1_w, ln1_b, wi, bi, wo2, bo2, ln2_w, ln2_b) = w
    x = np.random.default_rng(1).standard_normal((B, T, H)).astype(model.dtype)  # [B, T, H]
    rows, hidden = x.reshape(N, H), np.ones((N, inner), model.dtype)  # [N, H], [N, I]
    mask_bias = np.zeros((B, T), model.dtype)  # [B, T]: no padding
    kind, p = fast.ACTIVATIONS[c.hidden_act]
    scale = model.dtype.type(D ** -0.5)

    pass_ms = median_ms(lambda: model(ids), args.repeats)
    layer_ms = median_ms(lambda: layer(x, mask_bias, w, A, scale, c.layer_norm_eps, kind, p), args.repeats)
    print(f"{args.h5.name} ({B}, {T}): pass {pass_ms:.3f} ms; {layer.__name__} {layer_ms:.3f} ms a layer"
          f" (x {c.num_hidden_layers} = {layer_ms * c.num_hidden_layers:.3f})")

    product = fast.linear_rows if small else fast.product  # [N, in] x [out, in] -> [N, out]
    pieces = {  # name -> (function of no arguments, multiply-adds or 0)
        "query, key, value products": (lambda: [product(rows, m) for m in (wq, wk, wv)], 3 * N * H * H),
        "attention output product": (lambda: product(rows, wo), N * H * H),
        "intermediate product": (lambda: product(rows, wi), N * H * inner),
        "output product": (lambda: product(hidden, wo2), N * inner * H),
        "bias + LayerNorm (x2)": (lambda: [fast.bias_add_layer_norm(rows.copy(), bo, rows, ln1_w, ln1_b,
                                                                     c.layer_norm_eps) for _ in range(2)], 0),
        "bias + activation": (lambda: fast.bias_activation(hidden.copy(), bi, kind, p), 0),
    }
    if small:
        pieces["attention (fused, heads on Numba's threads)"] = (
            lambda: fast.attention(x, x, x, mask_bias, bq, bk, bv, A, scale), 2 * B * A * T * T * D)
    else:
        heads = ops.split_heads(x, A)  # [B, A, T, D]
        threads = kernels._BLAS_THREADS or 1
        if threads > 1 and B >= threads and heads.size * T >= fast.ATTENTION_THREADS_MIN_MACS:
            pieces["attention (sequences in threads)"] = (
                lambda: fast.attention_in_threads(heads, heads, heads, mask_bias, scale), 2 * B * A * T * T * D)
        else:
            def step_attention():
                scores = kernels.attention_scores(heads, heads, scale)  # [B, A, T, T]
                probs = kernels.masked_softmax(scores, mask_bias[:, None, None, :])
                return kernels.attention_context(probs, heads)
            pieces["attention (the step path's kernels)"] = (step_attention, 2 * B * A * T * T * D)
    total = 0.0
    for name, (run, macs) in pieces.items():
        ms = median_ms(run, args.repeats)
        total += ms
        rate = f"  {macs / ms / 1e6:6.1f} G multiply-adds/s" if macs else ""
        print(f"   {name:46} {ms:8.3f} ms  {ms / layer_ms:5.0%} of the layer{rate}")
    print(f"   {'sum of the pieces':46} {total:8.3f} ms  {total / layer_ms:5.0%}")


if __name__ == "__main__":
    main()
