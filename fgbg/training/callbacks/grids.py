"""Prediction grids: a fixed set of held-out samples, their targets and the model's predictions, per validation epoch.

The source document saved prediction images from inside its training loop (``saveimage``); here it is a
Lightning callback, configured in ``conf/callbacks/``.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.loggers import WandbLogger
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from fgbg.data.batch import COMPOSITE, DEPTH, MASK

GRID_COLUMNS = ("composite", "mask", "pred mask", "depth", "pred depth")  # the depth ones when depth is predicted
MASK_COLUMNS = 3
# Tiles are enlarged (nearest neighbour, by a whole factor) to at least this side, so that small
# training images stay visible and the column titles fit.
MIN_TILE = 64
PADDING = 2
HEADER = 14


def prediction_grid(batch: dict[str, Tensor], prediction: dict[str, Tensor]) -> Image.Image:
    """One row per sample, columns ``GRID_COLUMNS`` (the first ``MASK_COLUMNS`` without a predicted depth), titled
    on top.

    Args:
        batch: ``composite`` ``(N, 3, S, S)``, ``mask`` and ``depth`` ``(N, 1, S, S)`` (the batch contract).
        prediction: ``mask`` (foreground probability, shown as grey, not thresholded) and ``depth``,
            ``(N, 1, S, S)`` in [0, 1] (what ``MaskDepthModule.predict_step`` returns).

    The composite is stretched to its own [min, max] (inputs may be normalised); masks and depths are
    shown as they are, black 0 to white 1, so true and predicted values compare directly.
    Returns an RGB image ``HEADER + N * (T + PADDING) + PADDING`` high and ``n * (T + PADDING) + PADDING``
    wide (``n`` columns), ``T`` the tile side (``S`` enlarged to at least ``MIN_TILE``).
    """
    composite = batch[COMPOSITE].float()
    low = composite.amin(dim=(1, 2, 3), keepdim=True)
    high = composite.amax(dim=(1, 2, 3), keepdim=True)
    composite = (composite - low) / (high - low).clamp(min=1e-8)
    columns = [composite, batch[MASK], prediction[MASK]]
    if DEPTH in prediction:
        columns += [batch[DEPTH], prediction[DEPTH]]
    titles = GRID_COLUMNS[: len(columns)]
    tiles = torch.stack([c.float().cpu().expand(-1, 3, -1, -1) for c in columns], dim=1).flatten(0, 1)
    scale = math.ceil(MIN_TILE / tiles.shape[-1])
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
    grid = make_grid(tiles.clamp(0, 1), nrow=len(titles), padding=PADDING, pad_value=1.0)
    pixels = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    image = Image.new("RGB", (pixels.shape[1], pixels.shape[0] + HEADER), "white")
    image.paste(Image.fromarray(pixels), (0, HEADER))
    draw, step = ImageDraw.Draw(image), tiles.shape[-1] + PADDING
    for i, title in enumerate(titles):
        draw.text((PADDING + i * step + 2, 1), title, fill="black")
    return image


class PredictionGrid(L.Callback):
    """After each validation epoch, predict a fixed set of held-out samples and save / log their grid.

    The samples are ``n_samples`` evenly spaced over the validation dataset (in its fixed order, so the
    same in every epoch and every run with the same split; spread out, so they show different scenes).
    The grid (see :func:`prediction_grid`) is written to ``<dirpath>/epoch_XXX.png`` and, with a wandb
    logger, logged as the image ``val/predictions``.
    Only the global-rank-zero process does this; the sanity check before training is skipped.
    """

    def __init__(self, dirpath: str | Path, n_samples: int = 8):
        self.dirpath, self.n_samples = Path(dirpath), n_samples
        self._batch: dict[str, Tensor] | None = None

    def _samples(self, trainer: L.Trainer) -> dict[str, Tensor]:
        if self._batch is None:
            loader = trainer.val_dataloaders
            loader = loader[0] if isinstance(loader, (list, tuple)) else loader
            dataset = loader.dataset
            picks = torch.linspace(0, len(dataset) - 1, min(self.n_samples, len(dataset))).round().long()
            # Fetched as the DataLoader fetches a batch: through the dataset's __getitems__ when it has one.
            fetch = getattr(dataset, "__getitems__", None) or (lambda indices: [dataset[i] for i in indices])
            self._batch = loader.collate_fn(fetch(picks.tolist()))
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        precision = trainer.precision_plugin
        batch = precision.convert_input(move_data_to_device(self._samples(trainer), pl_module.device))
        # Lightning runs this hook without gradients, the module in eval mode; the precision is the steps'.
        with precision.forward_context():
            image = prediction_grid(batch, pl_module.predict_step(batch, 0))
        path = self.dirpath / f"epoch_{trainer.current_epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        columns = GRID_COLUMNS if pl_module.with_depth else GRID_COLUMNS[:MASK_COLUMNS]
        caption = f"epoch {trainer.current_epoch}: " + " | ".join(columns)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/predictions", [image], step=trainer.global_step, caption=[caption])
