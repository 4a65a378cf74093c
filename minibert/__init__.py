"""minibert: BERT from scratch in NumPy, proven equal to the PyTorch reference."""

from .config import BertConfig
from .errors import MinibertError

__version__ = "0.1.0"
