"""Write the student edition of the tutorials: solutions removed, hidden tests removed.

    python tutorials/make_student_edition.py OUT_DIR            # jupytext .py files
    python tutorials/make_student_edition.py OUT_DIR --ipynb    # .ipynb notebooks (needs jupytext)

The notebooks mark their exercises with nbgrader's conventions: the answer between
``### BEGIN SOLUTION`` and ``### END SOLUTION``, tests a grader keeps to itself between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``. The student edition replaces each
solution by ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (what nbgrader writes),
drops the hidden tests, and keeps the visible checks (``check.<exercise>(...)``, defined in
``exercise_checks.py``, copied along with ``tutorial_setup.py`` and the README).

With ``--ipynb`` every notebook also gets nbgrader's cell metadata (solution cells, and the
check cells as autograded tests worth one point), so a teacher who uses nbgrader can put the
teacher edition (``--teacher --ipynb``) in its ``source/`` folder and let nbgrader generate
the release itself.
"""

import argparse
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.py"))
SUPPORT = ["tutorial_setup.py", "exercise_checks.py", "README.md"]
MARKER = re.compile(r"^(\s*)### (BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$")


def strip(text, source="notebook"):  # teacher py:percent text -> student text
    out, inside = [], None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        m = MARKER.match(line)
        if m is None:
            if inside is None:
                out.append(line)
            continue
        indent, edge, kind = m.groups()
        if edge == "BEGIN":
            if inside is not None:
                raise SystemExit(f"error: {source}:{number}: ### BEGIN {kind} inside an open {inside} block\n"
                                 f"fix: close the {inside} block with ### END {inside} first")
            inside = kind
            if kind == "SOLUTION":
                out += [f"{indent}# YOUR CODE HERE\n", f"{indent}raise NotImplementedError()\n"]
        else:
            if inside != kind:
                raise SystemExit(f"error: {source}:{number}: ### END {kind} without ### BEGIN {kind}\n"
                                 f"fix: pair every ### BEGIN {kind} with one ### END {kind}")
            inside = None
    if inside is not None:
        raise SystemExit(f"error: {source}: ### BEGIN {inside} is never closed\nfix: add ### END {inside}")
    return "".join(out)


def with_nbgrader_metadata(nb, stem):  # mark solution cells and the check cells that follow them
    exercise = 0
    previous_was_solution = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = cell.source
        if "### BEGIN SOLUTION" in source or "raise NotImplementedError()" in source:
            exercise += 1
            cell.metadata["nbgrader"] = {"grade": False, "grade_id": f"{stem}-exercise-{exercise}", "locked": False,
                                         "schema_version": 3, "solution": True, "task": False}
            previous_was_solution = True
            continue
        if previous_was_solution and "check." in source:
            cell.metadata["nbgrader"] = {"grade": True, "grade_id": f"{stem}-exercise-{exercise}-check", "locked": True,
                                         "points": 1, "schema_version": 3, "solution": False, "task": False}
        previous_was_solution = False
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--ipynb", action="store_true", help="write .ipynb notebooks with nbgrader metadata")
    parser.add_argument("--teacher", action="store_true", help="keep solutions and hidden tests (nbgrader's source version)")
    args = parser.parse_args(argv)
    if args.out_dir.resolve() == HERE:
        raise SystemExit("error: OUT_DIR is the tutorials folder itself\nfix: name another folder, e.g. student/")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        student = text if args.teacher else strip(text, path.name)
        strip(text, path.name)  # the markers are checked in both modes
        if args.ipynb:
            try:
                import jupytext
            except ImportError:
                raise SystemExit("error: --ipynb needs jupytext\nfix: pip install -e '.[tutorials]'") from None
            nb = with_nbgrader_metadata(jupytext.reads(student, fmt="py:percent"), path.stem)
            jupytext.write(nb, args.out_dir / (path.stem + ".ipynb"))
        else:
            (args.out_dir / path.name).write_text(student, encoding="utf-8")
    for name in SUPPORT:
        shutil.copy2(HERE / name, args.out_dir / name)
    edition = "teacher" if args.teacher else "student"
    print(f"wrote the {edition} edition of {len(NOTEBOOKS)} notebooks to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
