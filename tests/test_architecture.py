"""The package's imports run one way: down the LAYERS below. No cycles, no upward import.

Every module of minibert/ is parsed with ``ast`` (function-level imports included) and each
import of another minibert module is checked against LAYERS. A new module must be added to
LAYERS; docs/architecture.md says in one line what it is for (a test checks that too).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minibert"
ARCHITECTURE_DOC = PACKAGE.parent / "docs" / "architecture.md"

# Lowest first. A module may import modules of the layers ABOVE it in this list (lower layers),
# never its own layer or a layer below it in this list. Modules in one layer are siblings that
# do not know each other.
LAYERS = [
    ["errors", "version"],  # exception types; the version string
    ["config", "hdf5", "safetensors"],  # BertConfig and presets; safe HDF5 reading; the safetensors reader
    ["ops"],  # the NumPy math: the readable reference
    ["kernels"],  # Numba twins of ops, and the Numba backend (ops with the kernels in place)
    ["fast"],  # the fused forward pass of a Numba model when nothing is traced
    ["inputs", "weights", "tf_checkpoint"],  # checking model inputs; the .h5 format; TensorFlow checkpoints
    ["trace", "tokenizer"],  # the recording tap: Trace, capture, aliases, trace files; WordPiece
    ["model"],  # the forward pass
    ["heads"],  # task heads on the encoder; sentence embeddings
    # hook list; first divergence; pictures; PyTorch; gradients by hand; the attention page; AdamW; training data
    ["hooks", "compare", "plot", "reference", "train", "view", "optim", "data"],
    ["convert", "export"],  # checkpoints -> .h5; .h5 -> Hugging Face directory
    ["api"],  # load(): file -> model with its head
    ["fit"],  # the training loop (finetune, pretrain)
    ["corpus"],  # a corpus, line by line, -> an HDF5 file of sentence embeddings (streamed, resumable)
    ["search", "distributed"],  # exact cosine top-k over such a file; the same encoding on Dask workers
    ["__init__"],  # the public names of `import minibert`
    ["cli"],  # the `minibert` command
    ["__main__"],  # python -m minibert
]

# Imported inside a function on purpose: importing it costs what the caller may never need.
LAZY = {"kernels": "imports numba; only a Numba model needs it (model.backend_functions)",
        "fast": "imports numba; only a Numba model needs it (model.fast_path_supports, BertModel.forward)"}

HOW_TO_REGISTER = (
    "register every module in LAYERS in tests/test_architecture.py: put its name in the lowest "
    "layer that comes after every minibert module it imports (a new list [\"name\"] between two "
    "layers if no layer fits), and add one line for it to docs/architecture.md"
)


def modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


def layer_of():
    return {name: i for i, layer in enumerate(LAYERS) for name in layer}


def imports(name):
    """[(imported minibert module, line, at module top?)] of minibert/<name>.py."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    package = set(modules())
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or node.module == "minibert" or (node.module or "").startswith("minibert."):
                module = node.module if node.level == 1 else (node.module or "").removeprefix("minibert")
                module = (module or "").lstrip(".")
                if module:
                    targets.append(module.split(".")[0])
                else:  # from . import x, y: submodules, or names of __init__
                    targets += [a.name if a.name in package else "__init__" for a in node.names]
            elif node.level > 1:
                pytest.fail(f"minibert/{name}.py:{node.lineno}: relative import beyond the package")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "minibert":
                    targets.append("__init__")
                elif alias.name.startswith("minibert."):
                    targets.append(alias.name.split(".")[1])
        found += [(t, node.lineno, id(node) in top_level) for t in targets if t != name]
    return found


def test_every_module_is_registered_in_layers():
    registered = layer_of()
    missing = [m for m in modules() if m not in registered]
    assert not missing, f"minibert modules not in LAYERS: {missing}; {HOW_TO_REGISTER}"
    stale = [m for m in registered if m not in modules()]
    assert not stale, f"LAYERS names modules that do not exist: {stale}; remove them from tests/test_architecture.py"


def test_imports_only_go_down_the_layers():
    layer = layer_of()
    problems = []
    for name in modules():
        if name not in layer:
            continue  # reported by test_every_module_is_registered_in_layers
        for target, line, at_top in imports(name):
            if target not in layer:
                problems.append(f"minibert/{name}.py:{line} imports {target!r}, which is not in LAYERS")
            elif layer[target] >= layer[name]:
                problems.append(
                    f"minibert/{name}.py:{line} imports {target!r} (layer {layer[target]}: {LAYERS[layer[target]]}) "
                    f"from layer {layer[name]} ({LAYERS[layer[name]]}): imports must go to an earlier layer"
                )
            elif not at_top and target not in LAZY:
                problems.append(
                    f"minibert/{name}.py:{line} imports {target!r} inside a function: import it at the top "
                    f"(only {sorted(LAZY)} are imported late, for their cost)"
                )
    assert not problems, "\n".join(problems) + f"\n(if a module moved or is new: {HOW_TO_REGISTER})"


def test_no_import_cycle():
    """Independent of LAYERS: the import graph (function-level imports included) has no cycle."""
    graph = {name: sorted({t for t, _, _ in imports(name) if t in modules()}) for name in modules()}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_layers_test_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: an ops.py importing model.py is reported, with the line."""
    for p in PACKAGE.glob("*.py"):
        (tmp_path / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    upward = "import numpy as np\n\ndef f():\n    from .model import BertModel\n"
    (tmp_path / "ops.py").write_text(upward, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    with pytest.raises(AssertionError, match=r"minibert/ops.py:4 imports 'model'"):
        test_imports_only_go_down_the_layers()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycle()


def imported_in_a_fresh_process(code, modules):
    """Which of ``modules`` are in sys.modules after ``code`` ran in a fresh Python process."""
    check = f"import sys\n{code}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    env_path = str(PACKAGE.parent)
    out = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        check=True,
        cwd=env_path,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    return out.stdout.split()


def test_import_minibert_leaves_the_heavy_dependencies_unimported():
    """numba, torch, transformers, matplotlib (and h5py) load only when something needs them."""
    heavy = ("numba", "torch", "transformers", "matplotlib", "h5py")
    assert imported_in_a_fresh_process("import minibert", heavy) == []


def test_a_numpy_backend_model_never_imports_numba():
    """load(..., backend="numpy") and a forward pass: start-up pays for NumPy and h5py only."""
    tiny = PACKAGE.parent / "tests" / "fixtures" / "tiny_model.h5"
    code = f"import minibert\nminibert.load({str(tiny)!r}, backend='numpy')([[1, 2, 3]])"
    heavy = ("numba", "llvmlite", "torch", "transformers", "matplotlib", "scipy")
    assert imported_in_a_fresh_process(code, heavy) == []


def test_architecture_doc_names_every_module():
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    missing = [m for m in modules() if f"`{m}.py`" not in text]
    assert not missing, f"docs/architecture.md does not describe {missing}: add one line per module"


STUDENT_PATH = ["ops.py", "model.py"]  # read top to bottom by students: one step per short line
STUDENT_LINE_LENGTH = 100  # the rest of the repo: ruff's line-length (pyproject.toml)


def test_the_student_path_has_short_lines():
    long_lines = [
        f"minibert/{name}:{i}: {len(line)} characters"
        for name in STUDENT_PATH
        for i, line in enumerate((PACKAGE / name).read_text(encoding="utf-8").splitlines(), start=1)
        if len(line) > STUDENT_LINE_LENGTH
    ]
    assert not long_lines, f"lines over {STUDENT_LINE_LENGTH} characters:\n" + "\n".join(long_lines)
