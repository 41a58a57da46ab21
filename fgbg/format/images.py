"""Reading a user's image file as it is, for generation from folders and for predict.

PIL's ``convert("RGB")`` / ``convert("L")`` clip 16-bit (``I;16``, ``I``) and float (``F``) images at 255,
which makes them white; :func:`read_image` scales them to 8 bits instead, or refuses values no scale fits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fgbg.errors import FgbgError

# The top of the deep modes' ranges, mapped to 255: 16-bit integers (also 32-bit ones that fit 16 bits), floats.
INT_TOP, FLOAT_TOP = 65535, 1.0


class ImageError(FgbgError, ValueError):
    """An image file that cannot be read, or holds values that no 8-bit scale fits; the message names the file."""


def read_image(path: Path) -> Image.Image:
    """The image at ``path``, fully decoded (a truncated file fails here), in an 8-bit mode (see :func:`to_8bit`).

    Its ``format`` is the file's (``"JPEG"``, ``"PNG"``, ...) unless it was scaled. A decompression bomb
    (PIL's ``DecompressionBombError``, or its warning when warnings are errors) is refused by name.
    """
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError as error:
        raise ImageError(f"{path}: no such file") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{path}: too large to open safely ({error}); use a smaller image") from error
    # PIL's UnidentifiedImageError and truncated-file errors are OSErrors; some plugins raise ValueError.
    except (OSError, ValueError) as error:
        raise ImageError(f"{path}: cannot read it as an image ({error})") from error
    return to_8bit(image, path)


def to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """Integer (``I;16``, ``I;16B``, ``I``, ...) and float (``F``) images -> ``L``; other modes unchanged.

    Integers 0..65535 become 0..255 (value / 257, rounded: 257 * v -> v), floats 0..1 become 0..255
    (value * 255, rounded). Other values are refused, naming ``path`` and the range found.
    """
    if image.mode == "F":
        top = FLOAT_TOP
    elif image.mode == "I" or image.mode.startswith("I;"):
        top = INT_TOP
    else:
        return image
    values = np.asarray(image)
    low, high = values.min(), values.max()
    if not 0 <= low <= high <= top:  # also refuses NaN
        kind = "a float" if image.mode == "F" else f"an integer ({image.mode})"
        raise ImageError(
            f"{path}: {kind} image with values {low:g}..{high:g}, outside 0..{top:g}: "
            "save it as an 8-bit or 16-bit image, or as floats in 0..1"
        )
    return Image.fromarray(np.rint(values * (255 / top)).astype(np.uint8), "L")
