"""The two backends against each other, every named step included.

Each backend against PyTorch is in test_parity.py (parametrized over "numpy" and "numba").
"""

import numpy as np
import pytest

import minibert

from helpers import padded_batch

DTYPES = ["float32", "float64"]

# numba against numpy: the same math in a different summation order, so far tighter than
# against PyTorch in float64. float32 keeps the parity tolerance (the float32 GELU differs by
# a few ulp and that is amplified through the layers like any rounding difference).
BACKEND_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def test_load_defaults_to_the_numba_backend(minilm_h5):
    assert minibert.load(minilm_h5).backend == "numba"


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_on_every_named_step(dtype, minilm_h5):
    """numba and numpy: same step names in the same order, same values, same dtype."""
    rng = np.random.default_rng(4)
    ids, mask, types = padded_batch(rng, 30522, lengths=[13, 6, 1], T=13)
    steps = {}
    for backend in ("numpy", "numba"):
        model = minibert.load(minilm_h5, dtype=dtype, backend=backend)
        seen = steps[backend] = []
        model(ids, mask, types, tap=lambda name, value, seen=seen: seen.append((name, value)) or value)
    assert [n for n, _ in steps["numba"]] == [n for n, _ in steps["numpy"]]
    tol = BACKEND_TOLERANCE[dtype]
    for (name, ours), (_, ref) in zip(steps["numba"], steps["numpy"]):
        assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.dtype(dtype), name
        scale = max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
        assert err <= tol * scale, f"{name}: numba vs numpy max abs error {err:.3e} > {tol * scale:.1e}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_untraced_with_every_output_option(dtype, minilm_h5):
    """Without a tap (the fast path), with and without hidden states and attention maps."""
    rng = np.random.default_rng(5)
    ids, mask, types = padded_batch(rng, 30522, lengths=[20, 11, 3], T=20)
    mask[2] = 0  # and a fully masked row
    numpy_model = minibert.load(minilm_h5, dtype=dtype, backend="numpy")
    numba_model = minibert.load(minilm_h5, dtype=dtype, backend="numba")
    ref = numpy_model(ids, mask, types, output_hidden_states=True, output_attentions=True)
    tol = BACKEND_TOLERANCE[dtype]
    for hs in (False, True):
        for att in (False, True):
            ours = numba_model(ids, mask, types, output_hidden_states=hs, output_attentions=att)
            assert (ours.hidden_states is not None) == hs and (ours.attentions is not None) == att
            pairs = [("last_hidden_state", ours.last_hidden_state, ref.last_hidden_state),
                     ("pooler_output", ours.pooler_output, ref.pooler_output)]
            pairs += [
                (f"hidden_states[{i}]", a, b)
                for i, (a, b) in enumerate(zip(ours.hidden_states or (), ref.hidden_states))
            ]
            pairs += [(f"attentions[{i}]", a, b) for i, (a, b) in enumerate(zip(ours.attentions or (), ref.attentions))]
            for name, a, b in pairs:
                assert a.dtype == np.dtype(dtype), name
                scale = max(1.0, float(np.abs(b).max()))
                assert float(np.abs(a.astype(np.float64) - b).max()) <= tol * scale, name
            if att:
                np.testing.assert_array_equal(ours.attentions[-1][2], np.full((12, 20, 20), 1 / 20, dtype))
