"""The project's own errors: problems a user can fix, each said in one line that names the file or key.

Every error the library raises on purpose derives from :class:`FgbgError`; the entry points
(:func:`fgbg.cli.entry_point`) print it as ``error: <message>`` and exit with :data:`EXIT_USER_ERROR`,
without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import numbers

# The exit status of a run stopped by an FgbgError (1 stays Python's and Hydra's for unexpected errors).
EXIT_USER_ERROR = 2


class FgbgError(Exception):
    """A problem with the user's input, files or settings; the message says which and what to do."""


class ConfigError(FgbgError, ValueError):
    """A config value of the wrong type or out of range; the message names the key and the allowed values."""


def check_int(key: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (``high`` None: no upper bound), else :class:`ConfigError` naming ``key``."""
    allowed = f"{low}..{high}" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{key}={value!r}: expected a whole number {allowed}")
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{key}={value}: expected a whole number {allowed}")
    return int(value)


def check_seed(value, key: str = "seed") -> int:
    """A random seed: what numpy and ``lightning.seed_everything`` accept, 0..2**32-1."""
    return check_int(key, value, 0, 2**32 - 1)


def check_fraction(key: str, value) -> float:
    """``value`` as a float in [0, 1), else :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r}: expected a fraction in [0, 1)")
    return float(value)


def check_choice(key: str, value, choices: tuple) -> str:
    """``value`` if it is one of ``choices``, else :class:`ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(map(str, choices))}")
    return value
