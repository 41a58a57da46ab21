"""Before a training run builds anything: are the zips where ``data.data_dir`` says, and do the normalisation
statistics fit them?

A missing dataset is reported before a logger starts (no wandb run) and the run folder that Hydra made for the
run is removed again (:func:`~fgbg.run_dirs.discard_run_dir`): a typo in a path leaves nothing behind.
``data.normalize=true`` with the sample scenes' statistics on zips that are not the sample scenes is warned
about, with the command that measures theirs.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fgbg.data.checks import DatasetError
from fgbg.format.manifest import manifest_of
from fgbg.format.names import zip_name
from fgbg.run_dirs import discard_run_dir

log = logging.getLogger(__name__)

# The data/stats options measured on the sample scenes (conf/data/stats/), and whether in grey
# (data.grayscale=true): the stats command reads the images the way the model will see them.
SAMPLE_STATS = {"sample": True, "sample_colour": False}
STATS_GROUP = "data/stats"


def check_data(cfg: DictConfig) -> None:
    """Check ``cfg.data`` before anything is built: :func:`check_zips` (removing the run folder when they are
    missing), then :func:`stats_advice` (a warning), except for a resumed run, which was advised when it started."""
    try:
        check_zips(Path(cfg.data.data_dir), cfg.data.strategy, cfg.data.strategies)
    except DatasetError:
        discard_run_dir(OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False))
        raise
    if not cfg.get("ckpt_path"):
        advice = stats_advice(cfg.data, _stats_choice())
        if advice:
            log.warning(advice)


def check_zips(data_dir: Path, strategy: str, strategies: DictConfig | dict) -> None:
    """:class:`DatasetError` unless ``data_dir`` holds every zip ``strategy`` reads (its ``batches`` and
    ``held_out_batches``), saying how to make them."""
    if strategy not in strategies:
        raise DatasetError(f"data.strategy={strategy!r} is none of data.strategies: {', '.join(strategies)}")
    missing = [zip_name(batch) for batch in _batches(strategies[strategy]) if not (data_dir / zip_name(batch)).exists()]
    if missing:
        raise DatasetError(
            f"{data_dir} has no {', '.join(missing)}, which data.strategy={strategy} reads: `make sample` writes "
            "data/sample_small (enough for 4k and 16k), `make generate` data/sample (every strategy); "
            "or set data.data_dir=<the folder of your zips>"
        )


def stats_advice(data: DictConfig | dict, stats_choice: str | None) -> str | None:
    """What to do when ``data.normalize`` uses the sample scenes' statistics (``stats_choice``, the
    ``data/stats`` option) on other zips, or those of the other colour mode; None when they fit, when
    ``normalize`` is off, or when the statistics are not the sample scenes' (the user's own, the document's)."""
    if not data["normalize"] or stats_choice not in SAMPLE_STATS:
        return None
    data_dir, grayscale = Path(data["data_dir"]), data["grayscale"]
    try:
        source = _source(data_dir / zip_name(_batches(data["strategies"][data["strategy"]])[0]))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None  # a damaged zip: the index reports it, by name, next
    if source != "sample":
        made = f"made from {source!r}" if source else "made by another tool (no manifest)"
        gray = " --gray" if grayscale else ""
        return (
            f"data.normalize=true with the sample scenes' mean/std ({STATS_GROUP}={stats_choice}), but the zips in "
            f"{data_dir} are {made}: measure theirs with `python -m fgbg.tools.stats {data_dir}{gray} "
            f"--out conf/data/stats/mine.yaml` and train with {STATS_GROUP}=mine"
        )
    if SAMPLE_STATS[stats_choice] != grayscale:
        fitting = next(name for name, gray in SAMPLE_STATS.items() if gray == grayscale)
        return (
            f"data.grayscale={str(grayscale).lower()} with {STATS_GROUP}={stats_choice}, measured in "
            f"{'grey' if SAMPLE_STATS[stats_choice] else 'colour'}: use {STATS_GROUP}={fitting}"
        )
    return None


def _batches(spec) -> list[int]:
    """The zips a strategy reads: its ``batches``, then its ``held_out_batches``."""
    return [*spec["batches"], *(spec.get("held_out_batches") or [])]


def _source(path: Path) -> str | None:
    """What the zip at ``path`` was made from: its manifest's ``settings.source.source`` (``sample``,
    ``folders``), None for a zip without a manifest."""
    with zipfile.ZipFile(path) as zf:
        source = (manifest_of(zf).get("settings") or {}).get("source")
    return source.get("source") if isinstance(source, dict) else source


def _stats_choice() -> str | None:
    """This run's ``data/stats`` option (Hydra's record of the defaults it chose); None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(STATS_GROUP) if HydraConfig.initialized() else None
