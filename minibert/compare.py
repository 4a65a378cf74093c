"""Compare two traces name by name and find the first step that differs: where a bug begins.

``compare(ours, reference)`` lines two ``Trace`` objects up by step name (never by position),
in ``ours``' execution order, and checks each step against the project's parity tolerance,
``TOLERANCE[dtype] * max(1, max|reference|)``. The tests use the same tolerance (``tolerance``).
"""

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .trace import Trace

__all__ = ["TOLERANCE", "Comparison", "Row", "compare", "tolerance"]

# The project's parity tolerance: max|ours - ref| <= TOLERANCE[dtype] * max(1, max|ref|).
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def tolerance(dtype, scale) -> float:
    """The largest max abs error allowed for a tensor whose reference has ``max|ref| = scale``."""
    return TOLERANCE[np.dtype(dtype)] * max(1.0, float(scale))


@dataclass
class Row:
    """One hook point compared: our value against the reference's."""

    name: str
    shape: tuple
    max_abs_error: float  # max |ours - ref|
    max_rel_error: float  # max |ours - ref| / max |ref|  (relative to the tensor's scale)
    tolerance: float  # TOLERANCE[dtype] * max(1, max |ref|)
    status: str  # "ok", "FAIL", or "missing" (in one trace only) / "shape" (shapes differ)

    @property
    def passed(self):
        return self.status == "ok"


class Comparison:
    """Rows per hook point in execution order, a printable table, and the first failure."""

    def __init__(self, rows, dtype, left_out=()):
        self.rows = rows
        self.dtype = dtype
        self.left_out = list(left_out)  # steps held by one trace only, because the other was taken with only=

    @property
    def passed(self):
        return all(r.passed for r in self.rows)

    @property
    def failures(self):
        return [r for r in self.rows if not r.passed]

    @property
    def first_failure(self):
        """The first failing Row in execution order (None when all pass): where the bug begins."""
        return next((r for r in self.rows if not r.passed), None)

    def table(self):
        width = max([len(r.name) for r in self.rows] + [10])
        lines = [
            f"{'hook point':<{width}}  {'shape':<16} {'max abs err':>11} {'max rel err':>11} {'tolerance':>9}  status"
        ]
        for r in self.rows:
            lines.append(
                f"{r.name:<{width}}  {str(r.shape):<16} {r.max_abs_error:>11.2e} {r.max_rel_error:>11.2e} "
                f"{r.tolerance:>9.1e}  {r.status}"
            )
        first = self.first_failure
        n_ok = sum(r.passed for r in self.rows)
        lines.append(f"{n_ok}/{len(self.rows)} hook points within tolerance ({self.dtype})")
        if self.left_out:
            lines.append(
                f"not compared: {len(self.left_out)} steps held by one trace only (the other was taken with only=)"
            )
        if first is not None:
            lines.append(
                f"first failing point: {first.name} (max abs err {first.max_abs_error:.2e} > {first.tolerance:.1e})"
            )
        return "\n".join(lines)

    __str__ = table


def compare(ours: Trace, reference: Trace, dtype=None) -> "Comparison":
    """Compare two traces name by name (never by position), in ``ours``' execution order.

    Tolerance per hook point, as the project's parity tests: float32 1e-5 * max(1, max|ref|),
    float64 1e-10 * max(1, max|ref|). ``dtype`` defaults to the dtype of ``ours``' values.
    Steps present in only one trace are rows with status "missing", unless the other trace was
    taken with ``only=`` (its meta says so): those are left out (``Comparison.left_out``) and the
    steps both hold are compared. Two traces with no step in common are an InputError.
    """
    if dtype is None:
        dtype = ours.meta.get("dtype") or next(iter(ours.values.values())).dtype
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCE:
        raise InputError(f"no parity tolerance for dtype {dtype}", "compare float32 or float64 traces")
    rows, left_out = [], []
    names = list(ours) + [n for n in reference if n not in ours.values]
    for name in names:
        a, b = ours.values.get(name), reference.values.get(name)
        # A trace taken with only= holds some steps on purpose: what it left out is not compared.
        if (a is None and ours.meta.get("only")) or (b is None and reference.meta.get("only")):
            left_out.append(name)
            continue
        if a is None or b is None:
            shape = tuple((a if a is not None else b).shape)
            rows.append(Row(name, shape, float("inf"), float("inf"), float("nan"), "missing"))
            continue
        scale = float(np.abs(b.astype(np.float64)).max()) if b.size else 0.0
        tol = tolerance(dtype, scale)
        if a.shape != b.shape:
            rows.append(Row(name, tuple(a.shape), float("inf"), float("inf"), tol, "shape"))
            continue
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
        if np.isnan(err):
            err = float("inf")  # a NaN is never within tolerance
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        rows.append(Row(name, tuple(a.shape), err, rel, tol, "ok" if err <= tol else "FAIL"))
    if not rows:
        raise InputError(
            f"the two traces share no step (ours: {len(ours)} steps, reference: {len(reference)})",
            "trace both with the same only= patterns, or compare against a full trace",
        )
    return Comparison(rows, str(dtype), left_out)
