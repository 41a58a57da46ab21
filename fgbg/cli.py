"""What every entry point shares: one-line errors instead of tracebacks, and no library chatter known to be harmless.

``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the traceback again; ``verbose=true`` the filtered messages.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from fgbg import run_dirs  # also registers ${fgbg.run_dir:...} and the others before Hydra composes the config
from fgbg.errors import EXIT_USER_ERROR, FgbgError


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    """Print ``error: <message>`` on stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# Python warnings (warnings.warn, Lightning's rank_zero_warn), by the start of their message.
HARMLESS_WARNINGS = (
    # Lightning's own pytree helper calls torch's deprecated API; nothing of ours to change, it keeps working.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # A short run (make train, a fast dev run) has fewer batches than log_every_n_steps: epoch values still log.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # Only for Trainer(logger=True), which the tasks never pass: they pass their loggers, or False.
    r"Starting from v1\.9\.0, `tensorboardX` has been removed",
    # The model summary counts parameters in float32 when the run is bf16-mixed: its sizes only, not the training.
    r"Precision bf16-mixed is not supported by the model summary",
)
# Lightning's info lines (rank_zero_info, the seed), by the start of their message.
HARMLESS_LOG_LINES = (
    # Advertisements for Lightning's cloud services (litlogger, litmodels): nothing about this run.
    r"💡 Tip: ",
    # Says that the YAML's default limit_train_batches/limit_val_batches: 1.0 means every batch.
    r"`Trainer\(\w+=1\.0\)` was configured so 100%",
    # The seed is in the run's config; "Seed set to 0" says it again on every run.
    r"Seed set to ",
    # No GPU and no TPU: nothing to choose. A GPU, used or not, is still reported (and one not used, warned about).
    r"GPU available: False, used: False",
    r"TPU available: False, using: 0 TPU cores",
)
# Where those lines are logged: a logger's filters see only the records made on it, not its children's.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)


class _HarmlessLines(logging.Filter):
    pattern = re.compile("|".join(HARMLESS_LOG_LINES))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


_HARMLESS_LINES = _HarmlessLines()


def quiet_libraries() -> None:
    """Filter the library warnings and info lines known to be harmless (:data:`HARMLESS_WARNINGS`,
    :data:`HARMLESS_LOG_LINES`); every other warning still shows. Idempotent."""
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _HARMLESS_LINES not in logger.filters:
            logger.addFilter(_HARMLESS_LINES)


def _print_usage() -> None:
    """The entry point's usage on stderr, as argparse shows it before an error: the header of its help
    (``hydra.help.header``, conf/hydra/help/<entry>.yaml); nothing outside Hydra or with Hydra's own help."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("hydra/help") not in (None, "default"):
        print(HydraConfig.get().help.header.rstrip(), file=sys.stderr)


def entry_point(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Wrap a ``hydra.main`` task: the project's errors and missing mandatory values become one line on stderr
    and exit status :data:`~fgbg.errors.EXIT_USER_ERROR`; other exceptions keep their traceback. Unless
    ``cfg.verbose``, harmless library messages are filtered (:func:`quiet_libraries`)."""

    @functools.wraps(task)
    def run(cfg: DictConfig):
        if not cfg.get("verbose", False):
            quiet_libraries()
        try:
            return task(cfg)
        except MissingMandatoryValue as error:
            if _full_errors():
                raise
            script = os.path.basename(sys.argv[0]) or "the script"
            _print_usage()
            run_dirs.discard_run_dir(run_dirs.this_run_dir())  # if it holds only Hydra's files: nothing to keep
            fail(f"{error.full_key} is required: python {script} {error.full_key}=... (see --help)")
        except Exception as error:
            # Hydra's instantiate wraps what a component's constructor raised: report the component's own error.
            cause = error.__cause__ if isinstance(error, InstantiationException) else error
            if not isinstance(cause, FgbgError) or _full_errors():
                raise
            fail(str(cause))

    return run
