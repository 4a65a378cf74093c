"""Thread safety: the same input gives the same output, bit for bit, whatever other threads do.

``kernels._matmul`` runs small products on one OpenBLAS thread; OpenBLAS's thread count is
process-wide, so the switch is made under ``kernels.BLAS_LOCK``, which every product of the
kernels holds (see ``_matmul``). These tests run 4 Python threads x 48 calls sharing one
model (and the backward kernels) and compare every output with the single-threaded one.
"""

import threading

import numpy as np
import pytest

from minibert import BertConfig, fast, kernels

import helpers

THREADS, CALLS = 4, 48


def seeded_model(dtype, backend, hidden_size=128):
    """bert-tiny's shape (H=128, L=2, A=2, I=512), or bert-mini's width (H=256, A=4, I=1024),
    seeded random weights, a small vocabulary."""
    config = BertConfig(vocab_size=1000, hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=hidden_size // 64, intermediate_size=4 * hidden_size,
                        max_position_embeddings=128)
    return helpers.seeded_model(config, dtype, backend)


def inputs(shapes=((1, 8), (8, 64), (2, 16))):
    """Small products (B=1, T=8: every product on one BLAS thread) and large ones (B=8, T=64:
    the [512, 128] @ [128, 512] products reach GEMM_PARALLEL_MIN_MACS), with padding."""
    rng = np.random.default_rng(1)
    cases = []
    for B, T in shapes:
        ids = rng.integers(0, 1000, size=(B, T))
        mask = np.ones((B, T), np.int64)
        mask[0, T // 2:] = 0  # a padded row
        cases.append((ids, mask))
    return cases


# The numpy backend never switches thread counts; its products all run on OpenBLAS's default
# count, threaded by OpenBLAS itself above ~262k multiply-adds (e.g. [32, 128] @ [128, 512]
# at B=2, T=16). Smaller inputs than the numba backend's: its GELU costs ~0.3 us an element.
NUMPY_SHAPES = ((1, 8), (2, 16), (2, 32))


def test_inputs_exercise_small_and_large_products():
    sizes = [B * T * 128 * 512 for B, T in [ids.shape for ids, _ in inputs()]]  # the intermediate product
    assert min(sizes) < kernels.GEMM_PARALLEL_MIN_MACS <= max(sizes)


def run_threads(job, n_jobs):
    """Run job(i) for i in range(n_jobs) on THREADS threads sharing the work; results by i."""
    results, errors = [None] * n_jobs, []
    barrier = threading.Barrier(THREADS)

    def worker(t):
        barrier.wait()  # start together, so the calls overlap
        try:
            for i in range(t, n_jobs, THREADS):
                results[i] = job(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def count_different(got, expected):
    return sum(not np.array_equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_is_bit_identical_under_threads(backend, dtype):
    model = seeded_model(dtype, backend)
    cases = inputs() if backend == "numba" else inputs(NUMPY_SHAPES)
    expected = [model(*cases[i % len(cases)]).last_hidden_state for i in range(THREADS * CALLS)]  # one thread
    got = run_threads(lambda i: model(*cases[i % len(cases)]).last_hidden_state, THREADS * CALLS)
    assert count_different(got, expected) == 0, f"{count_different(got, expected)} of {len(got)} outputs differ"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_path_few_rows_is_bit_identical_under_threads(dtype):
    """H=256 at 8 rows: fast.layer_small, whose products split over Numba's threads."""
    model = seeded_model(dtype, "numba", hidden_size=256)
    cases = inputs(((1, 8), (2, 4)))
    assert all(ids.size * 256 * 256 >= fast.PARALLEL_MIN_MACS and ids.size <= fast.SMALL_ROWS for ids, _ in cases)
    expected = [model(*cases[i % len(cases)]).last_hidden_state for i in range(THREADS * CALLS)]
    got = run_threads(lambda i: model(*cases[i % len(cases)]).last_hidden_state, THREADS * CALLS)
    assert count_different(got, expected) == 0, f"{count_different(got, expected)} of {len(got)} outputs differ"


def backward_cases(dtype):
    """Inputs of the backward kernels: a small product (8 rows) and a large one (1024 rows)."""
    rng = np.random.default_rng(2)
    cases = []
    for N, T in [(8, 8), (1024, 128)]:
        x = rng.standard_normal((N, 128)).astype(dtype)
        weight = (0.05 * rng.standard_normal((512, 128))).astype(dtype)
        dy = rng.standard_normal((N, 512)).astype(dtype)
        B = max(1, N // T)
        q, k, v = (rng.standard_normal((B, 2, T, 64)).astype(dtype) for _ in range(3))
        dscores = rng.standard_normal((B, 2, T, T)).astype(dtype)
        probs = kernels.masked_softmax(rng.standard_normal((B, 2, T, T)).astype(dtype), np.zeros((B, 1, 1, T), dtype))
        cases.append((x, weight, dy, q, k, v, dscores, probs))
    return cases


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backward_kernels_are_bit_identical_under_threads(dtype):
    cases = backward_cases(dtype)

    def job(i):
        x, weight, dy, q, k, v, dscores, probs = cases[i % len(cases)]
        return (*kernels.linear_backward(dy, x, weight),
                *kernels.attention_scores_backward(dscores, q, k, 0.125),
                *kernels.attention_context_backward(v, probs, v),
                kernels.linear(x, weight, dy[0]))

    expected = [job(i) for i in range(THREADS * CALLS)]
    got = run_threads(job, THREADS * CALLS)
    different = sum(count_different(g, e) for g, e in zip(got, expected, strict=True))
    assert different == 0, f"{different} arrays differ"
