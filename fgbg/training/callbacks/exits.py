"""Stopping and resuming cleanly: a signal saves where training was (:class:`CleanExit`), and the random
states continue from a checkpoint (:class:`RngState`). Both always on: ``fgbg.tasks.train.train`` adds them.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class CleanExit(L.Callback):
    """SIGTERM or Ctrl-C while fitting: finish the current step, save ``checkpoints/last.ckpt`` there, stop.

    Lightning's own SIGTERM handling is the base: its handler sets ``trainer.received_sigterm`` and its loops
    then raise ``SIGTERMException`` between two steps, where the loop state is whole. While training, this
    callback puts its handler before Lightning's for SIGTERM and routes SIGINT (Ctrl-C) the same way; a second
    Ctrl-C stops at once (a ``KeyboardInterrupt``, no checkpoint). On the exception it saves the checkpoint
    that a resume continues from exactly; the caller reads ``signal`` (``None`` when none came) and
    ``checkpoint`` (the file saved, if any) and exits with ``128 + signal``.
    """

    def __init__(self):
        self.signal: signal.Signals | None = None
        self.checkpoint: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has just installed its SIGTERM handler (and restores the previous ones when the run ends).
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        lightning_handler = signal.getsignal(signal.SIGTERM)

        def handle(signum, frame):
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # Ctrl-C again: stop now
            self.signal = signal.Signals(signum)
            lightning_handler(signum, frame)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handle)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = self.signal or signal.SIGINT
            return  # it may have come mid-step: the weights and the loop state need not agree
        if not isinstance(exception, SIGTERMException):
            return
        self.signal = self.signal or signal.SIGTERM
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.checkpoint = _last_checkpoint_path(trainer)
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # the whole training state


def _last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the run's ModelCheckpoint keeps ``last.ckpt`` (told that this file is now its last one)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        # Saved in the checkpoint's callback state: a resume into the same folder overwrites this file
        # instead of starting last-v1.ckpt beside it.
        callback.last_model_path = str(path)
        return path
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class RngState(L.Callback):
    """Keeps the global random states (torch, CUDA, numpy, Python) in checkpoints and restores them when
    training starts again from one, so randomness in the steps continues as if the run had not stopped.

    Restored in ``on_train_start``, after what a resumed run does before its first step (Lightning runs the
    sanity check with its random state isolated). Stored as tensors and plain containers, so checkpoints
    still load with ``torch.load(weights_only=True)``. Under DDP a checkpoint holds rank zero's states.
    """

    def __init__(self):
        self._loaded: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        state, self._loaded = self._loaded, None
        torch.set_rng_state(state["torch"])
        if torch.cuda.is_available():
            for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, device)
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
