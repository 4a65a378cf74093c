"""Execute every tutorial notebook, top to bottom, in a real Jupyter kernel; and its editions.

The tutorials live in ``tutorials/NN_*.py`` in jupytext's ``py:percent`` form (the source of
truth); each is converted to a notebook in memory and run with nbclient, from ``tutorials/``
as Jupyter would. A cell that raises fails the test with the cell's traceback. Each notebook
checks its own hand-written math against minibert (and PyTorch) with assertions, so a
notebook that runs is a notebook whose numbers are right; every exercise's check must print
"Exercise N passed" (the teacher edition passes its own checks).

Also tested here:
- without PyTorch: the notebooks that have PyTorch cells run again with ``torch`` and
  ``transformers`` made unimportable (a directory on the kernel's PYTHONPATH whose
  ``torch/__init__.py`` raises ImportError); they must skip those cells, say so, and pass
  every exercise;
- the student edition (``tutorials/make_student_edition.py``): no solution or hidden test
  left, and every exercise's check fails on it (the student's stub raises
  NotImplementedError inside the check);
- the notebooks also run as plain scripts from the repository root.

Needs the ``tutorials`` extra (jupytext, nbclient, nbformat, ipykernel, matplotlib).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TUTORIAL_SECONDS

pytestmark = [pytest.mark.tutorials, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
WITH_TORCH_CELLS = [p for p in NOTEBOOKS if "have_torch(" in p.read_text(encoding="utf-8")]

CELL_TIMEOUT_S = 180


EXPECTED = [
    "01_tokenization.py",
    "02_embeddings.py",
    "03_self_attention.py",
    "04_layer_encoder_pooler.py",
    "05_checking_yourself.py",
    "06_making_it_fast.py",
    "07_using_the_model.py",
    "08_backprop_by_hand.py",
    "09_fine_tuning.py",
]


def execute(path, cwd):
    """Run a py:percent file as a notebook in a fresh python3 kernel; returns the notebook."""
    try:
        import jupytext
        from nbclient import NotebookClient
    except ImportError as e:
        raise ImportError(
            f"running the tutorials needs the tutorials extra: pip install -e '.[tutorials]' ({e})"
        ) from None

    nb = jupytext.read(path)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def printed(nb):
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "some cells did not run"
    return "".join(o.get("text", "") for c in code_cells for o in c.outputs if o.get("output_type") == "stream")


MARKER_LINE = re.compile(r"^\s*### (BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$", re.M)


def exercise_count(path):  # the solution blocks: lines that are exactly "### BEGIN SOLUTION" (indented or not)
    return len(re.findall(r"^\s*### BEGIN SOLUTION\s*$", path.read_text(encoding="utf-8"), re.M))


@pytest.fixture(autouse=True)
def headless_matplotlib(monkeypatch, request):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it: no display needed
    start = time.perf_counter()
    yield
    TUTORIAL_SECONDS[request.node.name] = time.perf_counter() - start


def test_notebooks_found():
    assert [p.name for p in NOTEBOOKS] == EXPECTED
    assert WITH_TORCH_CELLS, "no notebook has PyTorch cells: the torch-free run would test nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    out = printed(execute(path, cwd=TUTORIALS))
    n = exercise_count(path)
    assert n >= 2, f"{path.name}: {n} exercises marked with ### BEGIN SOLUTION"
    for k in range(1, n + 1):
        assert f"Exercise {k} passed" in out, f"{path.name}: exercise {k}'s check did not pass"


@pytest.fixture(scope="module")
def no_torch_dir(tmp_path_factory):
    """A directory that, first on PYTHONPATH, makes ``import torch`` / ``import transformers`` fail."""
    d = tmp_path_factory.mktemp("no-torch")
    for name in ("torch", "transformers"):
        (d / name).mkdir()
        (d / name / "__init__.py").write_text(
            f'raise ImportError("{name} is blocked: testing the tutorials without PyTorch")\n'
        )
    return d


@pytest.mark.parametrize("path", WITH_TORCH_CELLS, ids=[p.stem for p in WITH_TORCH_CELLS])
def test_notebook_runs_without_torch(path, no_torch_dir, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(no_torch_dir), os.environ.get("PYTHONPATH", "")]))
    out = printed(execute(path, cwd=TUTORIALS))
    assert "SKIPPED (needs PyTorch)" in out and "torch is blocked" in out
    for k in range(1, exercise_count(path) + 1):
        assert f"Exercise {k} passed" in out, f"{path.name} without torch: exercise {k}'s check did not pass"


def cells(text):  # py:percent text -> list of code cells' sources
    parts = re.split(r"^# %%.*$", text, flags=re.M)
    headers = re.findall(r"^# %%.*$", text, flags=re.M)
    return [body for header, body in zip(headers, parts[1:]) if "[markdown]" not in header]


def test_student_edition(tmp_path):
    """Solutions and hidden tests are gone, and every exercise's check fails on the student edition."""
    import numpy as np

    sys.path.insert(0, str(TUTORIALS))
    import exercise_checks as check

    import minibert

    out_dir = tmp_path / "student"
    subprocess.run([sys.executable, str(TUTORIALS / "make_student_edition.py"), str(out_dir)], check=True, cwd=ROOT)
    assert (out_dir / "exercise_checks.py").read_bytes() == (TUTORIALS / "exercise_checks.py").read_bytes()
    checked = 0
    for path in NOTEBOOKS:
        text = (out_dir / path.name).read_text(encoding="utf-8")
        assert not MARKER_LINE.search(text), f"{path.name}: a marker line was left in the student edition"
        assert "check." in text
        code = cells(text)
        solutions = [i for i, c in enumerate(code) if "raise NotImplementedError()" in c]
        assert len(solutions) == exercise_count(path) >= 2, f"{path.name}: {len(solutions)} stubs"
        for i in solutions:
            namespace = {
                "np": np,
                "check": check,
                "minibert": minibert,
                "MODEL": check.tutorial_setup.default_model(),
                "layer_norm_rows": lambda x, w, b, eps: minibert.ops.layer_norm(x, w, b, eps),
            }
            exec("import math, types\nfrom numba import njit\n" + code[i], namespace)  # defines the student's stub
            call = next(line for line in code[i + 1].splitlines() if line.startswith("check."))
            with pytest.raises(NotImplementedError):
                exec(call, namespace)  # the visible check calls the student's function
            checked += 1
    assert checked == sum(exercise_count(p) for p in NOTEBOOKS)


def test_student_edition_as_nbgrader_notebooks(tmp_path):
    """--ipynb writes notebooks whose solution and check cells carry nbgrader's metadata."""
    import nbformat

    subprocess.run(
        [sys.executable, str(TUTORIALS / "make_student_edition.py"), str(tmp_path), "--ipynb", "--teacher"],
        check=True,
        cwd=ROOT,
    )
    for path in NOTEBOOKS:
        nb = nbformat.read(tmp_path / (path.stem + ".ipynb"), as_version=4)
        marks = [c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata]
        n = exercise_count(path)
        assert sum(m["solution"] for m in marks) == n and sum(m["grade"] for m in marks) == n, path.name


def test_notebook_runs_as_a_script_from_the_repository_root():
    """The README's `python tutorials/01_tokenization.py`, from the root: the set-up finds everything."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    run = subprocess.run(
        [sys.executable, "tutorials/01_tokenization.py"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Exercise 2 passed" in run.stdout
