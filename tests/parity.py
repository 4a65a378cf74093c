"""The parity check every test uses: max |minibert - torch| against the project's tolerance.

float32: max|ours - ref| <= 1e-5 * max(1, max|ref|)   (per tensor)
float64: max|ours - ref| <= 1e-10 * max(1, max|ref|)

Every comparison is recorded by name; conftest.py prints the table at the end of the run, so
the achieved errors can be read off CI.
"""

import numpy as np

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

RECORDED = []  # (test label, tensor name, dtype, max abs error, scale, tolerance)


def to_numpy(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def max_abs_error(ours, ref):
    return float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())


def assert_close(label, name, ours, ref, dtype):
    """Assert one named tensor matches its reference within the dtype's tolerance."""
    ours, ref = to_numpy(ours), to_numpy(ref)
    dtype = np.dtype(dtype)
    assert ours.shape == ref.shape, f"{label} {name}: shape {ours.shape} != reference {ref.shape}"
    assert ours.dtype == dtype, f"{label} {name}: dtype {ours.dtype}, expected {dtype}"
    assert np.isfinite(ours).all(), f"{label} {name}: non-finite values"
    err = max_abs_error(ours, ref)
    scale = max(1.0, float(np.abs(ref).max()))
    tol = TOLERANCE[dtype] * scale
    RECORDED.append((label, name, str(dtype), err, scale, tol))
    assert err <= tol, f"{label} {name}: max abs error {err:.3e} > tolerance {tol:.1e} (scale {scale:.3g})"
    return err


def assert_model_outputs_close(label, ours, ref, dtype):
    """Compare last_hidden_state, pooler_output, every hidden state and every attention map."""
    worst = 0.0
    worst = max(worst, assert_close(label, "last_hidden_state", ours.last_hidden_state, ref.last_hidden_state, dtype))
    worst = max(worst, assert_close(label, "pooler_output", ours.pooler_output, ref.pooler_output, dtype))
    if ours.hidden_states is not None:
        assert len(ours.hidden_states) == len(ref.hidden_states)
        for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
            worst = max(worst, assert_close(label, f"hidden_states[{i}]", a, b, dtype))
    if ours.attentions is not None:
        assert len(ours.attentions) == len(ref.attentions)
        for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions)):
            worst = max(worst, assert_close(label, f"attentions[{i}]", a, b, dtype))
    return worst
