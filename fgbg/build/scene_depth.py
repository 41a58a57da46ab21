"""Exact depth of the sample scenes, 8-bit grayscale, brighter = nearer (the convention of MiDaS / Depth Anything).

The foreground stands just in front of the nearest background surface it covers (its base plane), each of
its pixels nearer still by its relief; every other pixel keeps the background's depth, on a fixed log scale
between ``z_near`` and ``z_far`` metres, so a grey level means the same distance in every image.
"""

from __future__ import annotations

import numpy as np


class SceneDepth:
    """Exact depth of sample scenes, encoded ``255 * log(z_far / z) / log(z_far / z_near)``.

    Made from ``conf/depth/scene.yaml``; the defaults here are that file's values (a test holds them equal).
    """

    def __init__(self, z_near: float = 0.5, z_far: float = 10.0, margin: float = 0.05):
        if not 0 < z_near < z_far:
            raise ValueError(f"depth needs 0 < z_near < z_far, got z_near={z_near}, z_far={z_far}")
        self.z_near, self.z_far, self.margin = z_near, z_far, margin

    def describe(self) -> dict:
        return {
            "source": "scene",
            "encoding": "uint8 = 255*log(z_far/z)/log(z_far/z_near); brighter = nearer",
            "z_near": self.z_near,
            "z_far": self.z_far,
        }

    def encode(self, depth: np.ndarray) -> np.ndarray:
        """Metres ``(H, W)`` float -> ``(H, W)`` uint8, brighter = nearer."""
        z = np.clip(depth, self.z_near, self.z_far)
        scale = 255.0 / np.log(self.z_far / self.z_near)
        return (np.log(self.z_far / z) * scale + 0.5).astype(np.uint8)

    def foreground_depth(self, under: np.ndarray, relief: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Depth (metres) of a foreground placed over background depths ``under``.

        Args:
            under: ``(S, S)`` background depth beneath the foreground's square.
            relief: ``(S, S)`` how far each foreground pixel stands in front of its base plane.
            mask: ``(S, S)`` bool, the foreground's pixels (must not be empty).
        Returns:
            ``(S, S)`` depth, meaningful where ``mask``.
        """
        base = under[mask].min() - self.margin
        return base - relief
