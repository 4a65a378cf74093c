"""minibert: BERT from scratch in NumPy, proven equal to the PyTorch reference."""

__version__ = "0.1.0"

from .config import BertConfig  # noqa: E402
from .convert import convert  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    ConversionError,
    HeadError,
    InputError,
    MinibertError,
    WeightsError,
)
from .model import BertModel, BertOutput, load  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402
from .trace import Trace, compare  # noqa: E402
from .heads import (  # noqa: E402
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForSequenceClassification,
    l2_normalize,
    mean_pooling,
)
