"""What bounds a pass of few rows (batch 1 x 8 tokens): reading the weights, or multiplying them.

    python benchmarks/weight_streaming.py [--model bert-medium] [--rows 1 4 8] [--repeats 3]

At (1, 8) a pass multiplies 8 rows by every weight matrix once: few multiply-adds per byte
read, so the products wait on memory unless the reading and the arithmetic overlap. This
script takes one model's encoder matrices (seeded, in the layers' order, more bytes than the
L3 cache holds, so each pass reads them from DRAM) and reports, for N input rows:

- ``read``: a plain sum of every weight on Numba's threads: the DRAM read bandwidth, the floor;
- ``linear_rows``: minibert's product of few rows (``fast.linear_rows``, as ``layer_small``);
- ``linear_rows, in cache``: the same on 2 of the matrices, which stay in the cache: the
  arithmetic alone, in bytes of weights per second;
- ``NumPy``: ``x @ W.T`` on OpenBLAS (which packs each weight matrix on every call);
- ``ONNX Runtime``: one ``MatMul`` per matrix with the weights as initializers (packed once,
  when the session is made), where onnxruntime and onnx are installed.

GB/s of weights read (the matrices' bytes / the median time of one sweep over them) and the
multiply-adds per second. Like ``bench.py``, it removes ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` from its own environment before NumPy loads OpenBLAS
(docs/performance.md). Results and what they mean: docs/performance.md, the bound of the
(1, 8) cells under "Issue 13's targets, cell by cell".
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
from numba import njit, prange  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from tune_fast import config_of  # noqa: E402  (this folder's script: a preset's config, or MiniLM-L6's shape)

from minibert import fast  # noqa: E402

MODELS = ["bert-small", "bert-medium", "MiniLM-L6"]
MIN_BYTES = 256 * 2**20  # the weights swept: 8 times the 32 MB L3 cache (a sweep of 100 MB still found some in it)


@njit(parallel=True, fastmath={"reassoc"}, cache=True)
def read_all(weight):  # [out, in] -> [out] row sums: every weight read once, on Numba's threads
    sums = np.zeros(weight.shape[0], weight.dtype)
    for n in prange(weight.shape[0]):
        total = weight.dtype.type(0)
        for k in range(weight.shape[1]):
            total += weight[n, k]
        sums[n] = total
    return sums


def matrices(config, copies=1):
    """The encoder's weight matrices [out, in] in the order a pass reads them, ``copies`` times over."""
    rng = np.random.default_rng(0)
    H, inner = config.hidden_size, config.intermediate_size
    shapes = [(H, H)] * 4 + [(inner, H), (H, inner)]  # query, key, value, attention output, intermediate, output
    return [(0.05 * rng.standard_normal(shape)).astype(np.float32)
            for _ in range(copies * config.num_hidden_layers) for shape in shapes]


def onnx_sweep(weights, rows):
    """An ONNX Runtime session of one MatMul per matrix (weights as initializers) and its inputs, or None."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    sizes = sorted({w.shape[1] for w in weights})
    inputs = [helper.make_tensor_value_info(f"x{size}", TensorProto.FLOAT, [rows, size]) for size in sizes]
    nodes, outputs, initializers = [], [], []
    for i, w in enumerate(weights):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"w{i}"))  # [in, out]
        nodes.append(helper.make_node("MatMul", [f"x{w.shape[1]}", f"w{i}"], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "products", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feed = {f"x{size}": rng.standard_normal((rows, size)).astype(np.float32) for size in sizes}
    return lambda: session.run(None, feed)


def seconds_of(run, repeats, per_block=7):
    """Median seconds of one call of ``run``, over ``repeats`` blocks of ``per_block`` calls."""
    run()
    medians = []
    for _ in range(repeats):
        times = []
        for _ in range(per_block):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        medians.append(float(np.median(times)))
    return float(np.median(medians))


def products(weights, inputs):  # x @ W.T for every matrix, x the input of W's width: fast.linear_rows
    return [fast.linear_rows(inputs[w.shape[1]], w) for w in weights]


def blas_products(weights, inputs):  # the same on OpenBLAS through NumPy
    return [inputs[w.shape[1]] @ w.T for w in weights]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert-medium", choices=MODELS)
    parser.add_argument("--rows", nargs="*", type=int, default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = config_of(args.model)
    H, inner, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    one_copy = 4 * L * (4 * H * H + 2 * H * inner)  # bytes of the encoder's matrices
    weights = matrices(config, copies=-(-MIN_BYTES // one_copy))  # at least MIN_BYTES: more than L3 holds
    total = sum(w.nbytes for w in weights)
    in_cache = weights[4:6]  # layer 0's intermediate and output matrices: they stay in the cache
    cached = sum(w.nbytes for w in in_cache)
    print(f"{args.model}: {len(weights)} matrices, {total / 1e6:.0f} MB ({total // one_copy} copies of the encoder's);"
          f" in cache: {cached / 1e6:.1f} MB; 2 threads; median of {args.repeats} blocks")
    read = seconds_of(lambda: [read_all(w) for w in weights], args.repeats)
    print(f"   read (a sum of every weight, Numba threads) {total / read / 1e9:6.1f} GB/s")
    for rows in args.rows:
        rng = np.random.default_rng(rows)
        inputs = {size: rng.standard_normal((rows, size)).astype(np.float32) for size in (H, inner)}
        runs = {
            "linear_rows": (partial(products, weights, inputs), total),
            "linear_rows, in cache": (partial(products, in_cache, inputs), cached),
            "NumPy (OpenBLAS)": (partial(blas_products, weights, inputs), total),
        }
        session = onnx_sweep(weights, rows)
        if session is not None:
            runs["ONNX Runtime (packed)"] = (session, total)
        for name, (run, nbytes) in runs.items():
            seconds = seconds_of(run, args.repeats)
            print(f"   {rows} rows: {name:24} {nbytes / seconds / 1e9:6.1f} GB/s"
                  f"  {rows * nbytes / 4 / seconds / 1e9:6.1f} G multiply-adds/s")


if __name__ == "__main__":
    main()
