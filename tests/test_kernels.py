"""Every Numba kernel against its NumPy twin in ops.py, on random inputs of many shapes.

Tolerances, per output array (scale = max(1, max|reference|)):
    float64: 1e-12 * scale      (sums in a different order; nothing else differs)
    float32: 8 ulp of scale     (8 * 1.19e-7 * scale)
Each kernel runs through both of its drivers, the serial one and the parallel one (the
``driver`` fixture moves the size threshold that chooses between them).
"""

import inspect

import numpy as np
import pytest

from minibert import kernels, ops, optim

DTYPES = [np.float32, np.float64]
ULPS = 8


def assert_twin(ours, ref, dtype):
    """Same shape, same dtype, finite, and within the tolerance above."""
    assert ours.shape == ref.shape
    assert ours.dtype == ref.dtype == np.dtype(dtype)
    assert np.isfinite(ours).all()
    scale = max(1.0, float(np.abs(ref).max()))
    tol = (1e-12 if np.dtype(dtype) == np.float64 else ULPS * np.finfo(np.float32).eps) * scale
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= tol, f"max abs error {err:.3e} > {tol:.3e}"


@pytest.fixture(params=["serial", "parallel"])
def driver(request, monkeypatch):
    """Force every kernel onto its serial (threshold = inf) or parallel (threshold = 0) driver."""
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 0 if request.param == "parallel" else 1 << 62)
    return request.param


def random(rng, shape, dtype, scale=1.0, offset=0.0):
    return (offset + scale * rng.standard_normal(shape)).astype(dtype)


SHAPES = [(1, 1, 1), (1, 1, 128), (2, 1, 7), (3, 7, 33), (4, 64, 384), (5, 300)]
MAGNITUDES = [(1.0, 0.0), (1e4, 3e4)]  # ordinary, and large values far from zero


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm(dtype, shape, magnitude, driver):
    rng = np.random.default_rng(0)
    x = random(rng, shape, dtype, *magnitude)
    w, b = random(rng, shape[-1], dtype, 0.1, 1.0), random(rng, shape[-1], dtype)
    assert_twin(kernels.layer_norm(x, w, b, 1e-12), ops.layer_norm(x, w, b, 1e-12), dtype)


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_layer_norm(dtype, shape, magnitude, driver):
    rng = np.random.default_rng(1)
    x, residual = random(rng, shape, dtype, *magnitude), random(rng, shape, dtype, *magnitude)
    w, b = random(rng, shape[-1], dtype, 0.1, 1.0), random(rng, shape[-1], dtype)
    assert_twin(kernels.add_layer_norm(x, residual, w, b, 1e-5), ops.add_layer_norm(x, residual, w, b, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_of_a_constant_row_is_the_bias(dtype, driver):
    """Zero variance: (x - mean) = 0 exactly, so the output is the bias, not NaN."""
    x = np.full((2, 3, 16), 7.25, dtype)
    w, b = np.full(16, 2.0, dtype), np.arange(16, dtype=dtype)
    np.testing.assert_array_equal(kernels.layer_norm(x, w, b, 1e-12), np.broadcast_to(b, x.shape))


def test_layer_norm_accepts_non_contiguous_input(driver):
    rng = np.random.default_rng(2)
    x = random(rng, (6, 40, 24), np.float32).transpose(1, 0, 2)  # [40, 6, 24], a strided view
    w, b = random(rng, 24, np.float32), random(rng, 24, np.float32)
    assert_twin(kernels.layer_norm(x, w, b, 1e-12), ops.layer_norm(x, w, b, 1e-12), np.float32)


@pytest.mark.parametrize("magnitude", [(1.0, 0.0), (10.0, 0.0), (1e3, 0.0)])
@pytest.mark.parametrize("shape", [(1,), (1, 1, 512), (2, 3, 37), (8, 128, 512)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu(dtype, shape, magnitude, driver):
    x = random(np.random.default_rng(3), shape, dtype, *magnitude)
    ours, ref = kernels.gelu(x), ops.gelu(x)
    assert_twin(ours, ref, dtype)
    if dtype == np.float64:  # the same C-library erf: equal to the last bit
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_special_points(dtype, driver):
    """0, the tails where erf saturates (+-4 in float32), and huge values."""
    x = np.array([0.0, -0.0, 1.0, -1.0, 3.99, 4.0, 4.01, -4.0, -6.0, 6.0, 40.0, -40.0, 1e30, -1e30], dtype)
    assert_twin(kernels.gelu(x), ops.gelu(x), dtype)
    assert kernels.gelu(x)[0] == 0 and kernels.gelu(x)[10] == 40.0 and kernels.gelu(x)[11] == 0


def padding_mask(rng, B, T):
    """Random lengths 1..T, row 0 full length, and (for B > 2) row 1 fully masked."""
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)  # [B, T]
    if B > 2:
        mask[1] = 0
    return mask


@pytest.mark.parametrize("magnitude", [1.0, 1e3])
@pytest.mark.parametrize("B,A,T", [(1, 1, 1), (1, 2, 8), (3, 4, 1), (3, 2, 9), (4, 12, 40), (2, 4, 128)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax(dtype, B, A, T, magnitude, driver):
    rng = np.random.default_rng(5)
    scores = random(rng, (B, A, T, T), dtype, magnitude)
    bias = ops.attention_mask_bias(padding_mask(rng, B, T), np.dtype(dtype))
    ours, ref = kernels.masked_softmax(scores, bias), ops.masked_softmax(scores, bias)
    assert_twin(ours, ref, dtype)
    if B > 2:  # the fully masked row: uniform, exactly as ops (and transformers)
        np.testing.assert_array_equal(ours[1], np.full((A, T, T), 1 / T, dtype))


@pytest.mark.parametrize("shape", [(1, 1, 16), (2, 5, 16), (7, 16), (3, 9, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear(dtype, shape):
    rng = np.random.default_rng(6)
    x, w, b = random(rng, shape, dtype), random(rng, (24, 16), dtype), random(rng, 24, dtype)
    assert_twin(kernels.linear(x, w, b), ops.linear(x, w, b), dtype)


def test_linear_on_a_strided_view():
    """The pooler passes x[:, 0], a view with a row stride of T * H."""
    rng = np.random.default_rng(7)
    x = random(rng, (3, 5, 16), np.float32)[:, 0]  # [3, 16], not contiguous
    w, b = random(rng, (8, 16), np.float32), random(rng, 8, np.float32)
    assert_twin(kernels.linear(x, w, b), ops.linear(x, w, b), np.float32)


def test_the_numba_backend_is_ops_with_the_kernels_in_place():
    """Every public function of ops is in the backend with the same signature: the kernel where
    there is one (every kernel is used), ops' own function otherwise."""
    assert sorted(ops.__all__) == sorted(name for name, f in inspect.getmembers(ops, inspect.isfunction)
                                         if not name.startswith("_") and f.__module__ == ops.__name__)
    kernel_names = [name for name in kernels.__all__ if name != "backend"]
    for name in ops.__all__:
        f = getattr(kernels.backend, name)
        assert inspect.signature(f) == inspect.signature(getattr(ops, name)), name
        assert f is (getattr(kernels, name) if name in kernel_names else getattr(ops, name)), name
    assert set(kernel_names) <= set(ops.__all__)


def test_every_kernel_names_its_numpy_twin():
    """A kernel's NumPy twin is in ops (the model's math) or optim (the optimiser's update)."""
    for name, f in inspect.getmembers(kernels, inspect.isfunction):
        if f.__module__ == kernels.__name__ and not name.startswith("_"):
            twins = [f"{m.__name__.split('.')[-1]}.{name}" for m in (ops, optim) if hasattr(m, name)]
            assert twins, f"kernels.{name} has no NumPy twin of the same name in ops or optim"
            assert any(t in (f.__doc__ or "") for t in twins), f"kernels.{name} does not name {twins[0]}"


@pytest.mark.skipif(kernels._OPENBLAS is None, reason="NumPy is not linked to OpenBLAS here: no thread control to test")
def test_small_products_leave_the_blas_thread_count_as_it_was():
    get_threads = kernels._OPENBLAS[0]
    before = get_threads()
    x, w, b = np.ones((1, 8, 16), np.float32), np.ones((24, 16), np.float32), np.zeros(24, np.float32)
    np.testing.assert_array_equal(kernels.linear(x, w, b), np.full((1, 8, 24), 16, np.float32))
    assert get_threads() == before == kernels._BLAS_THREADS


@pytest.mark.parametrize("mask_dtype", DTYPES)
def test_masked_softmax_broadcasts_a_shared_mask_of_any_float_dtype(mask_dtype):
    """A [1, 1, 1, T] mask, or one in another dtype, takes the copying path; same result as ops."""
    rng = np.random.default_rng(9)
    scores = random(rng, (3, 2, 5, 5), np.float32)
    bias = ops.attention_mask_bias(padding_mask(rng, 1, 5), np.dtype(mask_dtype))  # [1, 1, 1, 5]
    bias[..., -1] = -1e4  # the last key masked, within float32 range in either dtype
    ref = ops.softmax(scores + bias.astype(np.float32))
    assert_twin(kernels.masked_softmax(scores, bias), ref, np.float32)


def test_float32_row_max_equals_numpy_max():
    """The row max through order-preserving integer keys: the same value as np.max on every kind
    of float32 it can meet (signs, both zeros, subnormals, infinities, the mask's finfo.min)."""
    tiny, big, low = np.finfo(np.float32).tiny, np.finfo(np.float32).max, np.finfo(np.float32).min
    rows = [np.float32([-3.0]), np.float32([-0.0, 0.0]), np.float32([0.0, -0.0]), np.float32([-5.0, -2.5, -7.0]),
            np.float32([low, low, low]), np.float32([low, -1e-40, low]), np.float32([tiny / 4, -tiny, 0.0]),
            np.float32([-np.inf, -big]), np.float32([1.0, np.inf, 2.0]), np.float32([-np.inf, -np.inf])]
    rng = np.random.default_rng(10)
    rows += [(scale * rng.standard_normal(n)).astype(np.float32) for n in (1, 15, 16, 17, 100, 512) for scale in
             (1e-38, 1.0, 1e30)]
    for row in rows:
        bits = np.empty(row.size, np.int32)
        got = kernels._row_max_float32(row.copy(), bits)
        assert got == row.max() and np.signbit(got) == np.signbit(row.max()) or got == row.max() == 0, row


def test_float32_exp_is_within_2_ulp_of_numpy():
    """The vectorised float32 exp of masked_softmax, on the float32 range it can meet."""
    edges = np.float32([0.0, -1e-30, 1e-30, -87.33, -88.0, -103.0, -3.4e38, np.finfo(np.float32).min])
    x = np.concatenate([np.linspace(-87.3, 88.0, 2_000_003, dtype=np.float32), edges])
    ours = x.copy()
    kernels._exp_float32(ours, np.empty(x.size, np.int32))
    ref = np.exp(x.astype(np.float64))
    normal = ref >= np.finfo(np.float32).tiny
    ulp = np.spacing(ref[normal].astype(np.float32)).astype(np.float64)
    assert float(np.max(np.abs(ours[normal] - ref[normal]) / ulp)) <= 2.0
    assert (ours[~normal] == 0).all()  # subnormal results and the mask's finfo.min: exactly 0
