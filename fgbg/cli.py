"""What every entry point shares: one-line errors instead of tracebacks.

``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the traceback again.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from fgbg import run_dirs  # noqa: F401  (registers ${fgbg.run_dir:...} before Hydra composes the config)
from fgbg.errors import EXIT_USER_ERROR, FgbgError


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    """Print ``error: <message>`` on stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def entry_point(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Wrap a ``hydra.main`` task: the project's errors and missing mandatory values become one line on stderr
    and exit status :data:`~fgbg.errors.EXIT_USER_ERROR`; other exceptions keep their traceback."""

    @functools.wraps(task)
    def run(cfg: DictConfig):
        try:
            return task(cfg)
        except MissingMandatoryValue as error:
            if _full_errors():
                raise
            script = os.path.basename(sys.argv[0]) or "the script"
            fail(f"{error.full_key} is required: python {script} {error.full_key}=... (see --help)")
        except Exception as error:
            # Hydra's instantiate wraps what a component's constructor raised: report the component's own error.
            cause = error.__cause__ if isinstance(error, InstantiationException) else error
            if not isinstance(cause, FgbgError) or _full_errors():
                raise
            fail(str(cause))

    return run
