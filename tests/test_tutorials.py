"""Execute every tutorial notebook, top to bottom, in a real Jupyter kernel.

The tutorials live in ``tutorials/NN_*.py`` in jupytext's ``py:percent`` form (the source of
truth); each is converted to a notebook in memory and run with nbclient, from ``tutorials/``
as Jupyter would. A cell that raises fails the test with the cell's traceback. Each notebook
checks its own hand-written math against minibert (and PyTorch) with assertions, so a
notebook that runs is a notebook whose numbers are right.

Needs the ``tutorials`` extra (jupytext, nbclient, nbformat, ipykernel, matplotlib).
"""

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tutorials, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))

TOTAL_BUDGET_S = 300  # all notebooks together, on CI's 2 cores
CELL_TIMEOUT_S = 180
ELAPSED = {}  # notebook name -> seconds


EXPECTED = [
    "01_tokenization.py",
    "02_embeddings.py",
    "03_self_attention.py",
    "04_layer_encoder_pooler.py",
    "05_checking_yourself.py",
    "06_making_it_fast.py",
    "07_using_the_model.py",
]


def execute(path, cwd, only_first_code_cells=None):
    """Run a py:percent file as a notebook in a fresh python3 kernel; returns the notebook."""
    try:
        import jupytext
        from nbclient import NotebookClient
    except ImportError as e:
        raise ImportError(
            f"running the tutorials needs the tutorials extra: pip install -e '.[tutorials]' ({e})"
        ) from None

    nb = jupytext.read(path)
    if only_first_code_cells is not None:
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        nb.cells = nb.cells[: code[only_first_code_cells - 1] + 1]
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


@pytest.fixture(autouse=True)
def headless_matplotlib(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it: no display needed


def test_notebooks_found():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    start = time.perf_counter()
    nb = execute(path, cwd=TUTORIALS)
    ELAPSED[path.name] = time.perf_counter() - start
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "some cells did not run"
    # Every notebook ends with exercises whose check cells print "... passed".
    printed = "".join(o.get("text", "") for c in code_cells for o in c.outputs if o.get("output_type") == "stream")
    assert "Exercise 1 passed" in printed


def test_set_up_cell_works_from_the_repository_root():
    """The first code cell finds the repository and the model from the root as well."""
    execute(NOTEBOOKS[0], cwd=ROOT, only_first_code_cells=1)


def test_total_time_within_budget():
    """Runs last (pytest keeps file order): the notebooks executed above fit CI's budget."""
    total = sum(ELAPSED.values())
    print("notebook seconds:", {k: round(v, 1) for k, v in ELAPSED.items()}, "total", round(total, 1))
    assert total < TOTAL_BUDGET_S, f"notebooks took {total:.0f} s, budget {TOTAL_BUDGET_S} s: {ELAPSED}"
