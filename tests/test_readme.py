"""The README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = bash_blocks(readme)[1].strip().splitlines()  # one command a line
    assert "pytest" in test_command[-1]
    ci_lines = ci.splitlines()
    assert all(line in ci_lines for line in test_command), "README's test command and .ci/run differ"
    assert [ci_lines.index(line) for line in test_command] == sorted(ci_lines.index(line) for line in test_command)


def test_each_setup_command_stands_alone_on_a_fresh_machine():
    """Issue 10 item 19: no README set-up line relies on a venv another line made."""
    readme = (ROOT / "README.md").read_text()
    for block in bash_blocks(readme)[:2]:
        for command in block.strip().splitlines():
            masked = command.replace("python3 -m venv", " " * len("python3 -m venv"))  # same length: same indices
            first_use = re.search(r"\b(pip|python|minibert)\b", masked)
            if first_use:  # the command makes and enters its own venv before it first runs pip, python or minibert
                venv = command.find("python3 -m venv .venv && . .venv/bin/activate && ")
                assert 0 <= venv < first_use.start(), command
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert not any("activate" in line for line in ci_lines[:-1]), "CI must not prepare a venv the README command lacks"
