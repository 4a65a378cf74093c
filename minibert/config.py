"""BertConfig: the hyper-parameters of a BERT encoder.

Read from a Hugging Face ``config.json`` (unknown keys are ignored, missing required keys
are a ``ConfigError``), from the attributes of a minibert ``.h5`` file, or from one of the
four compact-BERT presets of Turc et al. (2019) as published by prajjwal1.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from .errors import ConfigError

# Keys that every BERT config.json carries; without them the model cannot be built.
REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)

# Every hidden_act minibert computes, in one place: the names of transformers' ACT2FN that BERT
# checkpoints use, each the name of a function in ops.py (and kernels.py) with its backward
# beside it, ``<name>_backward(dy, x) -> dx``. The model calls the function of this name.
SUPPORTED_ACTIVATIONS = {
    "gelu": "exact GELU: 0.5 x (1 + erf(x / sqrt(2)))",
    "gelu_new": "tanh GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), what Google's BERT calls 'gelu'",
    "gelu_pytorch_tanh": "the same tanh GELU, computed by torch's gelu(approximate='tanh')",
    "gelu_fast": "tanh GELU with sqrt(2/pi) rounded: 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))",
    "quick_gelu": "x sigmoid(1.702 x)",
    "relu": "max(x, 0)",
    "silu": "x sigmoid(x)",
    "swish": "x sigmoid(x) (silu under another name)",
    "tanh": "tanh(x)",
}

# Sane upper bounds: far above every published BERT, far below what would exhaust memory
# before an error (a config declaring 10^7 layers is refused here, not after minutes).
LIMITS = {
    "vocab_size": 1 << 22,  # 4M tokens (BERT: 30522, multilingual: 119547)
    "hidden_size": 1 << 14,  # 16384 (BERT-large: 1024)
    "num_hidden_layers": 256,  # BERT-large: 24
    "num_attention_heads": 1 << 10,
    "intermediate_size": 1 << 16,  # 65536 (BERT-large: 4096)
    "max_position_embeddings": 1 << 17,  # 131072 (BERT: 512)
    "type_vocab_size": 1 << 10,  # BERT: 2
}
MAX_LABELS = 1 << 16
CHECK_CONFIG = "check the config.json the model came from"


@dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder, named as in transformers' ``BertConfig``."""

    vocab_size: int = 30522
    hidden_size: int = 768  # H
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12  # A; head size D = H // A
    intermediate_size: int = 3072  # I, the feed-forward width (4H in BERT)
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    # Dropout, applied only in training (minibert.train with an rng), where transformers applies it.
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: Optional[float] = None  # None: hidden_dropout_prob (the classification head)
    # Optional task-head metadata (sequence classification); empty for a bare encoder.
    id2label: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
                raise ConfigError(f"config value {name}={value!r} must be an integer from 1 to {limit:,}", CHECK_CONFIG)
        eps = self.layer_norm_eps
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (math.isfinite(eps) and 0 < eps < 1):
            raise ConfigError(
                f"config value layer_norm_eps={eps!r} must be a finite number between 0 and 1 (BERT: 1e-12)",
                CHECK_CONFIG,
            )
        self.layer_norm_eps = float(eps)
        pad = self.pad_token_id
        if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad < self.vocab_size:
            raise ConfigError(
                f"config value pad_token_id={pad!r} must be a token id in [0, vocab_size={self.vocab_size})",
                CHECK_CONFIG,
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}",
                "check the config.json the model came from",
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act={self.hidden_act!r} is not supported; minibert implements "
                f"{', '.join(SUPPORTED_ACTIVATIONS)}",
                "use a checkpoint with one of those activations (or, when converting, choose one with --hidden-act)",
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            probability = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
            if value is not None and not probability:
                raise ConfigError(f"config value {name}={value!r} must be a probability in [0, 1]",
                                  "check the config.json the model came from")
        self.id2label = _id2label(self.id2label or {})

    @property
    def head_size(self):  # D
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self):
        return len(self.id2label)

    @classmethod
    def from_dict(cls, d, source="config"):
        """Build from a dict such as a parsed config.json; unknown keys are ignored."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(d).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise ConfigError(
                f"{source}: missing required key(s) {', '.join(missing)}",
                "a BERT config.json needs " + ", ".join(REQUIRED_KEYS),
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known and v is not None}
        # transformers writes id2label for every model (LABEL_0, LABEL_1 by default); it only
        # means something when a classification head is present, which convert() decides.
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e.message}", e.hint) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}", "check the values in the config") from None

    @classmethod
    def from_json(cls, path):
        """Read a Hugging Face config.json."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found", "pass the config.json of the checkpoint")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})", "pass the config.json of the checkpoint") from None
        return cls.from_dict(d, source=str(path))

    def to_dict(self):
        return asdict(self)

    @classmethod
    def preset(cls, name):
        """One of the compact BERTs: bert-tiny, bert-mini, bert-small, bert-medium."""
        key = name.split("/")[-1]
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}", f"choose one of {', '.join(PRESETS)}")
        L, H = PRESETS[key]
        return cls(num_hidden_layers=L, hidden_size=H, num_attention_heads=H // 64, intermediate_size=4 * H)


# name -> (L, H), from the model cards of prajjwal1/bert-*; A = H / 64, I = 4H.
PRESETS = {
    "bert-tiny": (2, 128),
    "bert-mini": (4, 256),
    "bert-small": (4, 512),
    "bert-medium": (8, 512),
}


def _id2label(value):
    """{int id: str label} from a config's id2label (JSON keys are strings), checked."""
    if not isinstance(value, dict):
        raise ConfigError(f"config value id2label={value!r} must be an object {{id: label}}", CHECK_CONFIG)
    if len(value) > MAX_LABELS:
        raise ConfigError(
            f"config value id2label has {len(value):,} labels, at most {MAX_LABELS:,} are supported", CHECK_CONFIG
        )
    out = {}
    for key, label in value.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            index = None
        if index is None or isinstance(key, bool) or not isinstance(label, str):
            raise ConfigError(
                f"config value id2label has the entry {key!r}: {label!r}; expected an integer id and a string label",
                CHECK_CONFIG,
            )
        out[index] = label
    if sorted(out) != list(range(len(out))):
        raise ConfigError(
            f"config value id2label has ids {sorted(out)[:8]}..., expected 0 to {len(out) - 1}", CHECK_CONFIG
        )
    return out
