"""Draw the extension / module icon: an axial brain slice with a tumor in the
label table's colours (edema, enhancing rim, necrotic core).

    python Testing/Tools/make_icon.py     # writes BrainTumorCNN.png and its module copy

128 x 128 RGBA, transparent outside the brain, drawn from formulas (no
randomness), 4x supersampled for smooth edges.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib import image as mpimg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "BrainTumorCNN"))

from BrainTumorCNNLib.labels import TISSUES  # noqa: E402

SIZE = 128
SUPERSAMPLE = 4
OUTPUTS = (ROOT / "BrainTumorCNN.png", ROOT / "BrainTumorCNN" / "Resources" / "Icons" / "BrainTumorCNN.png")


def _blend(rgba: np.ndarray, mask: np.ndarray, colour, alpha: float = 1.0) -> None:
    """Paint `colour` over `rgba` (H, W, 4) where `mask` (float 0-1) is set."""
    a = np.clip(mask, 0, 1)[..., None] * alpha
    rgba[..., :3] = rgba[..., :3] * (1 - a) + np.asarray(colour) * a
    rgba[..., 3:] = np.maximum(rgba[..., 3:], a)


def draw(size: int = SIZE) -> np.ndarray:
    """The icon as float RGBA (size, size, 4) in [0, 1]."""
    n = size * SUPERSAMPLE
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n * 2 - 1  # [-1, 1], y down
    angle = np.arctan2(y, x)
    radius = np.hypot(x / 0.80, y / 0.94)
    gyri = 0.025 * np.sin(13 * angle) + 0.012 * np.sin(29 * angle + 1.0)
    brain = radius < 1 + gyri
    cortex = brain & (radius > 0.86 + gyri)
    fissure = (np.abs(x - 0.02 * np.sin(6 * y)) < 0.025) & ((y < -0.55) | (y > 0.70))
    sulci = brain & (np.abs(np.sin(13 * angle + 0.6 * np.sin(9 * radius))) < 0.10) & (radius > 0.68 + gyri)
    # lateral ventricles: two crescents either side of the midline
    tilt = np.abs(x) - 0.10 - 0.10 * (y + 0.05) ** 2
    ventricles = (np.hypot(tilt / 0.055, (y + 0.02) / 0.30) < 1) & (np.abs(x) > 0.025)

    rgba = np.zeros((n, n, 4))
    _blend(rgba, brain, (0.86, 0.86, 0.88))  # white matter
    _blend(rgba, cortex | sulci, (0.62, 0.62, 0.66))  # grey matter
    _blend(rgba, brain & (ventricles | fissure), (0.22, 0.22, 0.28))  # CSF
    outline = brain & (radius > 0.975 + gyri)
    _blend(rgba, outline, (0.35, 0.35, 0.42))

    # tumor in the right hemisphere (image left, radiological convention)
    cx, cy = -0.46, -0.24
    tumor_angle = np.arctan2(y - cy, x - cx)
    r = np.hypot((x - cx) / 1.1, y - cy)
    edema = r < 0.30 + 0.05 * np.sin(5 * tumor_angle) + 0.03 * np.sin(9 * tumor_angle + 2)
    core = r < 0.19 + 0.02 * np.sin(4 * tumor_angle + 1)
    necrosis = r < 0.10 + 0.015 * np.sin(3 * tumor_angle)
    _blend(rgba, brain & edema, TISSUES["edema"].color, alpha=0.85)
    _blend(rgba, core, TISSUES["enhancing"].color)
    _blend(rgba, necrosis, TISSUES["necrosis"].color)

    # average premultiplied colour, so edges do not darken towards the transparent background
    rgba[..., :3] *= rgba[..., 3:]
    small = rgba.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 4).mean(axis=(1, 3))
    small[..., :3] /= np.maximum(small[..., 3:], 1e-6)
    return np.clip(small, 0, 1)


def main() -> None:
    rgba = draw()
    for path in OUTPUTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        mpimg.imsave(path, rgba, format="png", metadata={"Software": None})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
