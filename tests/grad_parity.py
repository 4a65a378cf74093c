"""The gradient check the gradient tests use: every parameter's d loss / d parameter from
``minibert.train.value_and_grad`` against ``torch.autograd``, by name.

float32: max|ours - ref| <= 1e-5 * max(1, max|ref|)   (per parameter; the issue allowed 1e-4,
         the worst measured is 3.7e-6: MiniLM, encoder.layer.0.output.LayerNorm.weight)
float64: max|ours - ref| <= 1e-10 * max(1, max|ref|)

Every comparison is recorded; conftest.py prints the worst per model, head and dtype at the
end of the run.
"""

import numpy as np

GRAD_TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

GRAD_RECORDED = []  # (label, parameter name, dtype, max abs error, scale, tolerance)


def torch_grads(torch_model):
    """{name without the bert. prefix: gradient}, one entry per named parameter (tied ones once)."""
    return {name.removeprefix("bert."): p.grad.detach().numpy() for name, p in torch_model.named_parameters()}


def assert_close_scaled(label, name, ours, ref, dtype):
    dtype = np.dtype(dtype)
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, f"{label} {name}: shape {ours.shape} != reference {ref.shape}"
    assert ours.dtype == dtype, f"{label} {name}: dtype {ours.dtype}, expected {dtype}"
    assert np.isfinite(ours).all(), f"{label} {name}: non-finite values"
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    scale = max(1.0, float(np.abs(ref).max()))
    tol = GRAD_TOLERANCE[dtype] * scale
    GRAD_RECORDED.append((label, name, str(dtype), err, scale, tol))
    assert err <= tol, f"{label} {name}: max abs error {err:.3e} > tolerance {tol:.1e} (scale {scale:.3g})"
    return err


def assert_grads_close(label, grads, ref_grads, dtype):
    """Same names (tied weights once), then each gradient within tolerance. Returns the worst error."""
    assert list(grads) == [n for n in grads if n in ref_grads] and set(grads) == set(ref_grads), (
        f"{label}: parameter names differ: only minibert {sorted(set(grads) - set(ref_grads))}, "
        f"only torch {sorted(set(ref_grads) - set(grads))}")
    return max(assert_close_scaled(label, name, grads[name], ref_grads[name], dtype) for name in ref_grads)


def summary(terminalreporter):
    """The table printed at the end of the run (called by conftest's terminal summary)."""
    if not GRAD_RECORDED:
        return
    worst = {}
    for label, name, dtype, err, scale, tol in GRAD_RECORDED:
        key = (label, dtype)
        if key not in worst or err / tol > worst[key][1] / worst[key][3]:
            worst[key] = (name, err, scale, tol)
    tr = terminalreporter
    tr.section("gradients: worst max|minibert - torch.autograd| per model, head and dtype")
    header = f"{'model / head (inputs)':<52} {'dtype':<8} {'worst parameter':<44} {'max abs err':>11} {'tolerance':>10}"
    tr.write_line(header)
    for (label, dtype), (name, err, _scale, tol) in sorted(worst.items()):
        tr.write_line(f"{label:<52} {dtype:<8} {name:<44} {err:>11.2e} {tol:>10.1e}")
    tr.write_line(f"{len(GRAD_RECORDED)} gradients compared")
