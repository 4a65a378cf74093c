"""minibert: BERT from scratch in NumPy, proven equal to the PyTorch reference.

``import minibert`` imports NumPy and the package's own modules. The heavy dependencies wait
until they are used: Numba until the first Numba model is built (``backend="numba"``, the
default of ``load`` and ``BertModel``), h5py until a file is read or written, torch and
transformers until ``minibert.reference`` runs, matplotlib until ``minibert.plot`` draws.
"""

import importlib

from . import heads, ops, reference
from .api import load
from .compare import compare
from .config import BertConfig
from .convert import convert
from .errors import ConfigError, ConversionError, HeadError, InputError, MinibertError, WeightsError
from .heads import (
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForSequenceClassification,
    l2_normalize,
    mean_pooling,
)
from .model import BertModel, BertOutput
from .tokenizer import Tokenizer
from .trace import Trace
from .version import __version__
from .view import view

__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForSequenceClassification", "BertModel", "BertOutput", "ConfigError", "ConversionError", "HeadError",
    "InputError", "MinibertError", "Tokenizer", "Trace",
    "WeightsError", "__version__", "compare", "convert", "heads", "l2_normalize", "load", "mean_pooling", "ops",
    "reference", "view",
]


def __getattr__(name):
    """``minibert.kernels``: imported on first use, as it imports Numba."""
    if name == "kernels":
        return importlib.import_module(".kernels", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
