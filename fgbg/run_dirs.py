"""Run folders that no two runs share: the config resolver ``${fgbg.run_dir:outputs/train}``.

Hydra's ``${now:%Y-%m-%d_%H-%M-%S}`` alone gives two runs started in the same second one folder, and the
second overwrites the first's files. The resolver creates ``<base>/<time>`` with a plain ``mkdir`` (which
only one process can win) and, when that name is taken, ``<time>-2``, ``<time>-3``, ...

Importing this module registers the resolver (the entry points import it through :mod:`fgbg.cli`, before
Hydra composes). It is cached (``use_cache``): one config resolves it once, and Hydra copies that cache into
every job of a sweep, so the jobs share their sweep folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf

RESOLVER = "fgbg.run_dir"
# The folder name's time stamp, as Hydra's own run folders had it.
STAMP = "%Y-%m-%d_%H-%M-%S"


def new_run_dir(base: str | Path) -> str:
    """Create and return a folder ``<base>/<time>`` that did not exist, suffixed ``-2``, ``-3``, ... if needed."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime(STAMP)
    folder, n = base / stamp, 1
    while True:
        try:
            folder.mkdir()
            return str(folder)
        except FileExistsError:
            n += 1
            folder = base / f"{stamp}-{n}"


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, new_run_dir, use_cache=True)
