"""Built-in sample scenes: rooms and objects drawn by code, so their depth is known exactly.

A background is a pinhole view into a box-shaped room (floor, ceiling, side walls, back wall)
with furniture blocks standing on the floor; every pixel's depth is the distance along the
camera axis to the first surface its ray hits. A foreground is an object cut-out (RGBA with a
binary alpha) plus a relief: how far (metres) each of its pixels stands in front of the object's
base plane. Everything is seeded per image id, so the same (seed, id) always gives the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fgbg.format.names import BG_SIZE, FG_SIZE


def _rng(seed: int, kind: int, image_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, image_id])


def _colour(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.95) -> np.ndarray:
    return rng.uniform(lo, hi, size=3)


def _texture(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pattern in [0, 1] over surface coordinates (metres): checker, stripes, or noise-like waves."""
    kind = rng.integers(0, 4)
    scale = rng.uniform(0.25, 0.9)
    if kind == 0:
        return ((np.floor(u / scale) + np.floor(v / scale)) % 2).astype(np.float32)
    if kind == 1:
        return (np.floor(u / (scale * 0.5)) % 2).astype(np.float32)
    if kind == 2:
        return 0.5 + 0.5 * np.sin(u * rng.uniform(3, 9)) * np.cos(v * rng.uniform(3, 9))
    return 0.5 + 0.5 * np.sin((u + v) * rng.uniform(4, 12))


def background(seed: int, image_id: int, size: int = BG_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Render background ``image_id``: ``(rgb (H, W, 3) uint8, depth (H, W) float32 metres)``."""
    rng = _rng(seed, 0, image_id)
    # Drawn one at a time, in this order: the same (seed, id) keeps giving the same room.
    room = _Room(*(rng.uniform(low, high) for low, high in ((1.5, 3.5), (2.4, 3.2), (0.9, 1.7), (4.0, 9.0), (0.7, 1.1))))
    pan = rng.uniform(-0.35, 0.35)  # horizontal shift of the view, in ray-slope units
    tilt = rng.uniform(-0.15, 0.2)
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    focal = size * room.focal
    dx = (u - size / 2) / focal + pan
    dy = (v - size / 2) / focal + tilt  # image y grows downwards, so +dy looks at the floor
    rgb, depth = _walls(rng, room, dx, dy)
    _furniture(rng, room, dx, dy, rgb, depth)
    # Light falls off with distance, like a lamp at the camera; a little sensor noise on top.
    rgb *= (1.15 - 0.6 * (depth / depth.max()))[..., None]
    rgb += rng.normal(0, 0.015, size=rgb.shape)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), depth


@dataclass(frozen=True)
class _Room:
    """A box-shaped room seen from its middle (metres), and the camera's focal length in image widths."""

    half_width: float
    height: float
    eye: float
    back: float
    focal: float


def _walls(rng: np.random.Generator, room: _Room, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour ``(H, W, 3)`` float32 and depth ``(H, W)`` of the first wall each ray ``(dx, dy)`` ``(H, W)`` hits."""
    inf = np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        candidates = {
            "floor": np.where(dy > 0, room.eye / dy, inf),
            "ceiling": np.where(dy < 0, -(room.height - room.eye) / dy, inf),
            "left": np.where(dx < 0, -room.half_width / dx, inf),
            "right": np.where(dx > 0, room.half_width / dx, inf),
            "back": np.full_like(dx, room.back),
        }
    surfaces = list(candidates)
    stack = np.stack([candidates[s] for s in surfaces])
    hit = np.argmin(stack, axis=0)
    depth = np.min(stack, axis=0).astype(np.float32)
    x, y = dx * depth, dy * depth  # world coordinates of each hit point
    coords = {"floor": (x, depth), "ceiling": (x, depth), "left": (depth, y), "right": (depth, y), "back": (x, y)}
    colours = np.empty((2, 3, len(surfaces)))  # base and accent, channel, surface
    pattern = np.empty_like(dx)
    for index, surface in enumerate(surfaces):
        where = hit == index
        colours[..., index] = _colour(rng), _colour(rng)
        # Textured only where the surface is seen: the same values, at a fraction of a full image's cost.
        pattern[where] = _texture(rng, *(c[where] for c in coords[surface]))
    base, accent = ([np.take(channel, hit) for channel in colour] for colour in colours)  # each pixel's surface's
    return _blend(base, accent, pattern, 0.35, np.float32), depth


def _blend(base, accent, pattern: np.ndarray, strength: float, dtype=np.float64) -> np.ndarray:
    """``(..., 3)`` ``dtype``: colour ``base`` blended towards ``accent`` by ``strength * pattern`` ``(...)``; each of
    a colour's 3 channels is a number or one per pattern value. Channel by channel: numpy is slow over a last axis
    of 3."""
    weight = 1 - strength * pattern
    out = np.empty((*pattern.shape, 3), dtype)
    for c, (b, a) in enumerate(zip(base, accent)):
        out[..., c] = b * weight + a * strength * pattern
    return out


def _furniture(rng: np.random.Generator, room: _Room, dx, dy, rgb: np.ndarray, depth: np.ndarray) -> None:
    """Paint camera-facing blocks standing on the floor into ``rgb`` ``(H, W, 3)`` and ``depth`` ``(H, W)`` (in
    place) for rays ``dx, dy`` ``(H, W)``; nearer surfaces win."""
    for _ in range(rng.integers(1, 4)):
        z = rng.uniform(2.0, room.back - 0.3)
        width, tall = rng.uniform(0.4, 1.6), rng.uniform(0.4, 1.8)
        left = rng.uniform(-room.half_width, room.half_width - width)
        with np.errstate(divide="ignore", invalid="ignore"):
            hx, hy = dx * z, dy * z
        front = (hx >= left) & (hx <= left + width) & (hy <= room.eye) & (hy >= room.eye - tall) & (z < depth)
        pattern = _texture(rng, hx[front], hy[front])  # drawn before the colours: the order keeps the scene
        rgb[front] = _blend(_colour(rng), _colour(rng), pattern, 0.3)
        depth[front] = z


def foreground(seed: int, image_id: int, size: int = FG_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Render foreground ``image_id``: ``(rgba (S, S, 4) uint8, relief (S, S) float32 metres)``.

    Alpha is 0 or 255 (a clean cut-out, so the mask is exactly ``alpha > 0``). ``relief`` is how far
    each object pixel stands in front of the object's base plane (0 outside the object).
    """
    rng = _rng(seed, 1, image_id)
    v, u = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size * 2 - 1  # in [-1, 1]
    shape = _SHAPES[rng.integers(0, 4)](rng, u, v) & (np.abs(u) < 0.97) & (np.abs(v) < 0.97)
    base, accent = _colour(rng, 0.05, 1.0), _colour(rng, 0.05, 1.0)
    rgb = _blend(base, accent, _texture(rng, u * 2, v * 2), 0.5)
    # Rounded relief: the middle of the object bulges towards the camera, which also shades it.
    bulge = np.clip(1 - (u**2 + v**2), 0, 1) ** 0.5
    rgb *= (0.65 + 0.35 * bulge)[..., None]
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    rgba[..., 3] = np.where(shape, 255, 0)
    relief = np.where(shape, rng.uniform(0.1, 0.5) * bulge, 0).astype(np.float32)
    return rgba, relief


def _figure(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A standing figure: body ellipse and a head; ``(S, S)`` bool over coordinates ``u, v`` in [-1, 1]."""
    body = ((u / rng.uniform(0.3, 0.5)) ** 2 + ((v - 0.25) / rng.uniform(0.5, 0.7)) ** 2) <= 1
    head_r = rng.uniform(0.18, 0.28)
    return body | ((u**2 + (v + 0.55) ** 2) <= head_r**2)


def _ellipse(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An ellipse at an angle."""
    angle = rng.uniform(0, np.pi)
    ru, rv = rng.uniform(0.4, 0.9), rng.uniform(0.25, 0.6)
    a = u * np.cos(angle) + v * np.sin(angle)
    b = -u * np.sin(angle) + v * np.cos(angle)
    return (a / ru) ** 2 + (b / rv) ** 2 <= 1


def _star(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A star-like polygon."""
    spikes = rng.integers(3, 8)
    radius = np.hypot(u, v)
    theta = np.arctan2(v, u) + rng.uniform(0, np.pi)
    return radius <= rng.uniform(0.45, 0.7) + rng.uniform(0.1, 0.3) * np.cos(spikes * theta)


def _table(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A chair/table-like block with legs."""
    top = (np.abs(u) <= rng.uniform(0.5, 0.9)) & (v >= -0.6) & (v <= rng.uniform(-0.2, 0.2))
    leg_w = rng.uniform(0.08, 0.18)
    legs = (v > -0.6) & (v <= 0.9) & ((np.abs(u - 0.5) <= leg_w) | (np.abs(u + 0.5) <= leg_w))
    return top | legs


_SHAPES = (_figure, _ellipse, _star, _table)
