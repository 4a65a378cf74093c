"""The few exception types a minibert user catches.

Every error raised for a user mistake is a ``MinibertError``: its message names the
problem (which file, which tensor, which shape) and ends with a one-line hint on how to
fix it. The command line prints the message without a traceback and exits with status 1.
"""


class MinibertError(Exception):
    """Base class of every error minibert raises on purpose."""

    def __init__(self, message, hint=None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nFix: {hint}")


class ConfigError(MinibertError, ValueError):
    """A config.json or a config in an .h5 file is missing keys or has bad values."""


class WeightsError(MinibertError, ValueError):
    """A weights file is missing, not ours, corrupted, or holds a tensor of the wrong shape."""


class ConversionError(MinibertError, ValueError):
    """A checkpoint cannot be converted (missing files, unsafe pickle, no network)."""


class InputError(MinibertError, ValueError):
    """Inputs to the model or tokenizer are invalid (ids out of range, shape mismatch...)."""


class HeadError(MinibertError, ValueError):
    """A task head was asked for that the weights file does not hold."""
