"""A pretrained monocular depth model that labels composites without scene depth (the depth stage,
:mod:`fgbg.build.label`): 8-bit grayscale, brighter = nearer, each map normalised on its own (:data:`ENCODING`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fgbg.errors import ConfigError, FgbgError
from fgbg.format.names import BG_SIZE


class TeacherError(FgbgError, RuntimeError):
    """A depth model that cannot be loaded or run as configured; the message names it and says what to do."""


# PIL resample codes, as image processors store them, to torch modes; others (Lanczos, ...) resize bicubic.
_RESIZE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
_DTYPES = ("float16", "bfloat16", "float32")
_PREDICTS = ("disparity", "depth")
# Per-image min-max: relative models predict disparity up to an unknown scale and shift per image,
# so no grey level can mean the same distance across images.
ENCODING = "uint8 = 255*(d - min d)/(max d - min d) per image, d = predicted disparity; brighter = nearer"


class Teacher:
    """A pretrained monocular depth model (``AutoModelForDepthEstimation`` + its image processor).

    Made from ``conf/depth/*.yaml`` (defaults in ``conf/depth/hub.yaml``). Composites are resized to
    ``input_size`` and normalised on the device as the model's image processor says (its mean, std,
    rescale and resample); the prediction is resized back to the composite's size and stored per
    :data:`ENCODING`. Nothing is loaded until :meth:`load`.

    Args:
        model: hub id (``depth-anything/Depth-Anything-V2-Small-hf``) or a folder saved with ``save_pretrained``.
        revision: hub branch, tag or commit; None = the default branch. The commit used is recorded.
        input_size: side of the square model input; None = the image processor's size.
        batch_size: images per forward.
        dtype: ``float16`` | ``bfloat16`` | ``float32`` on a GPU; the CPU always computes in float32.
        device: ``auto`` (cuda when there is one, else cpu) or a torch device string.
        predicts: ``disparity`` (relative models: MiDaS/DPT, Depth Anything) or ``depth`` (metric models,
            inverted so that brighter = nearer still holds).
        allow_download: fetch weights missing from the local cache from the hub (never when HF_HUB_OFFLINE=1).
    """

    def __init__(
        self,
        model: str,
        revision: str | None,
        input_size: int | None,
        batch_size: int,
        dtype: str,
        device: str,
        predicts: str,
        allow_download: bool,
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"depth.dtype must be one of {_DTYPES}, got {dtype!r}")
        if predicts not in _PREDICTS:
            raise ValueError(f"depth.predicts must be one of {_PREDICTS}, got {predicts!r}")
        if batch_size < 1 or (input_size is not None and input_size < 1):
            raise ValueError(f"depth.batch_size and depth.input_size must be positive, got {batch_size}, {input_size}")
        self.model, self.revision, self.input_size, self.batch_size = model, revision, input_size, batch_size
        self.dtype_name, self.device_name, self.predicts, self.allow_download = dtype, device, predicts, allow_download
        self.net = None

    def load(self) -> Teacher:
        """Load the weights (local folder or cache first, then the hub) and run one batch through them.

        Everything that can fail (no weights, an input size the model refuses, a dtype the device lacks,
        a batch too large for the device) fails here, before the caller writes anything. Loading twice
        is a no-op.
        """
        if self.net is not None:
            return self
        net, processor, self.revision_used = self._fetch()
        self.size = self.input_size or _processor_size(processor, self.model)
        multiple = getattr(processor, "ensure_multiple_of", None) or 1
        if self.size % multiple:
            raise TeacherError(f"depth.input_size={self.size}: {self.model} takes multiples of {multiple}")
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(auto if self.device_name == "auto" else self.device_name)
        self.dtype = getattr(torch, self.dtype_name) if self.device.type == "cuda" else torch.float32
        # The processor's rescale and normalise folded into one per-channel affine map of 0..255 pixels.
        scale = processor.rescale_factor if processor.do_rescale else 1.0
        mean = processor.image_mean if processor.do_normalize else (0.0, 0.0, 0.0)
        std = processor.image_std if processor.do_normalize else (1.0, 1.0, 1.0)
        self._gain = torch.tensor([scale / s for s in std], device=self.device).view(1, 3, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=self.device).view(1, 3, 1, 1)
        self._resize = _RESIZE_MODES.get(int(processor.resample), "bicubic")
        self.net = net.to(device=self.device, dtype=self.dtype).eval()
        try:  # a full batch: running out of device memory fails here too
            next(self.predict_batches([torch.zeros((self.batch_size, BG_SIZE, BG_SIZE, 3), dtype=torch.uint8)]))
        except (RuntimeError, ValueError) as error:
            self.net = None
            dtype = str(self.dtype).removeprefix("torch.")
            raise TeacherError(
                f"depth teacher {self.model!r} cannot run a batch of {self.batch_size} at input_size={self.size} in "
                f"{dtype} on {self.device} (if out of memory: lower depth.batch_size): {error}"
            ) from error
        return self

    def describe(self) -> dict:
        """The manifest's record of these labels (after :meth:`load`); equal records mean equal labels."""
        return {
            "source": "teacher",
            "model": self.model,
            "revision": self.revision_used,
            "input_size": self.size,
            "dtype": str(self.dtype).removeprefix("torch."),
            "predicts": self.predicts,
            "normalize": "image",
            "encoding": ENCODING,
        }

    def raw_prediction(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model alone: ``(B, 3, S, S)`` normalised pixels in its dtype -> ``(B, h, w)`` prediction."""
        return self.net(pixel_values=pixels).predicted_depth

    def predict_batches(self, batches: Iterable) -> Iterator[np.ndarray]:
        """Depth maps of each batch, in order.

        Args:
            batches: ``(B, H, W, 3)`` uint8 CPU tensors (pinned, for a GPU, so the upload is asynchronous).
        Yields:
            ``(B, H, W)`` uint8 arrays per :data:`ENCODING`. On a GPU batch ``i + 1`` is queued before
            batch ``i`` is handed back, so the device keeps working while the caller handles the result.
        """
        pending = None
        for images in batches:
            launched = self._launch(images)
            if pending is not None:
                yield _finish(*pending)
            pending = launched
        if pending is not None:
            yield _finish(*pending)

    def _launch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        with torch.inference_mode():
            x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            antialias = self._resize != "nearest-exact"  # as PIL resizes for the processor
            x = F.interpolate(x, size=(self.size, self.size), mode=self._resize, antialias=antialias)
            d = self.raw_prediction((x * self._gain + self._shift).to(self.dtype)).float()
            if self.predicts == "depth":
                d = 1.0 / d.clamp_min(1e-6)
            d = F.interpolate(d[:, None], size=tuple(images.shape[1:3]), mode="bilinear", antialias=True)[:, 0]
            low, high = d.amin(dim=(1, 2), keepdim=True), d.amax(dim=(1, 2), keepdim=True)
            out = ((d - low) / (high - low).clamp_min(1e-12) * 255).round_().to(torch.uint8)
            if self.device.type != "cuda":
                return out, None
            host = torch.empty(out.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return host, done

    def _fetch(self):
        """``(model, image processor, revision used)``: from the folder or cache, else from the hub if allowed."""
        from huggingface_hub.constants import HF_HUB_CACHE, is_offline_mode

        folder = Path(self.model)
        if not folder.exists() and (folder.is_absolute() or self.model.startswith(".")):
            raise TeacherError(f"depth.model={self.model}: no such folder")
        try:
            return self._from_pretrained(local_files_only=True)
        except OSError as error:
            missing = error
        except ValueError as error:  # found, but not a depth model with an image processor
            raise TeacherError(f"depth.model={self.model}: {_first_line(error)}") from error
        if folder.is_dir():
            raise TeacherError(
                f"depth.model={self.model}: the folder holds no model and image processor that transformers can "
                f"load ({_first_line(missing)}); save both there with save_pretrained"
            ) from missing
        if is_offline_mode():
            why = "downloads are off (HF_HUB_OFFLINE=1)"
        elif not self.allow_download:
            why = "downloads are off (depth.allow_download=false)"
        else:
            try:
                return self._from_pretrained(local_files_only=False)
            except OSError as error:
                missing, why = error, "the download failed"
        revision = f" --revision {self.revision}" if self.revision else ""
        raise TeacherError(
            f"depth teacher {self.model!r}{revision}: its weights are not in the local cache ({HF_HUB_CACHE}) "
            f"and {why} ({_first_line(missing)}). On a machine with a network run `hf download {self.model}"
            f"{revision}` (older huggingface_hub: `huggingface-cli download ...`), then copy that cache here (or "
            "point HF_HOME at a copy); or save the model's folder and pass depth.model=/path/to/folder"
        ) from missing

    def _from_pretrained(self, local_files_only: bool):
        # transformers takes seconds to import: only when a teacher is used.
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        from transformers.utils import resolve_revision

        # One commit for the weights and the processor, and the one recorded (None for a local folder).
        revision = resolve_revision(self.model, self.revision, local_files_only=local_files_only)
        kwargs = {"revision": revision, "local_files_only": local_files_only}
        net = AutoModelForDepthEstimation.from_pretrained(self.model, **kwargs)
        processor = AutoImageProcessor.from_pretrained(self.model, **kwargs)
        return net, processor, str(revision) if revision else None


def require_teacher(depth, stage: str) -> Teacher:
    """``depth`` if it is a :class:`Teacher`, else :class:`ConfigError`: only a model labels finished zips."""
    if not isinstance(depth, Teacher):
        raise ConfigError(
            f"stage={stage} needs a depth model (depth=depth_anything_v2_small | dpt_hybrid | hub), got "
            f"{type(depth).__name__}; scene depth is made with the composites (stage=all)"
        )
    return depth


def _processor_size(processor, model: str) -> int:
    size = processor.size  # {"height", "width"} (DPT, Depth Anything) or {"shortest_edge"}
    side = size.get("height") or size.get("shortest_edge")
    if not side:
        raise TeacherError(f"{model}: its image processor gives no input size ({size}); set depth.input_size")
    return int(side)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _finish(images: torch.Tensor, done: torch.cuda.Event | None) -> np.ndarray:
    if done is not None:
        done.synchronize()
    return images.numpy()


def save_untrained(folder: Path, backbone: dict, head: dict, side: int) -> Path:
    """A randomly initialised Depth Anything (seeded) and Depth Anything V2's image processor (bicubic to
    ``side``, multiples of 14, ImageNet statistics), saved in ``folder`` as a hub download would be: a
    :class:`Teacher` ``model`` where no weights can be downloaded, to time the depth stage or to test it.

    ``backbone``: ``Dinov2Config`` arguments (``hidden_size``, ``num_hidden_layers``, ...); ``head``:
    ``DepthAnythingConfig`` arguments (``neck_hidden_sizes``, ...).
    """
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    config = DepthAnythingConfig(
        backbone_config=Dinov2Config(**backbone, image_size=side, patch_size=14, reshape_hidden_states=False), **head
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(
        size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return Path(folder)
