"""Where a heatmap falls on the film's anatomy: its share of energy inside the lungs (against the lungs' share of
the film, the level a map that ignores anatomy would reach), whether its peak lies in the lungs, and its energy
on the border strip and in the corners, where markers and text sit.

Every number is of one heatmap ``[S, S]`` (non-negative) and one lung mask of the same size; ``None`` when the
map is empty (no evidence to place).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BORDER = 0.08   # the border strip: this share of the side on each edge
CORNER = 0.2    # a corner square: this share of the side, where the "R"/"L" markers and the text are


@dataclass(frozen=True)
class Focus:
    """One heatmap against one lung mask."""

    heat_in_lungs: float     # the map's energy inside the lungs, as a share of its energy
    chance: float            # the lungs' share of the film
    peak_in_lungs: bool      # the map's largest value lies inside the lungs
    border: float            # share of energy on the border strip (its area share: ``border_area``)
    corners: float           # share of energy in the four corner squares

    def to_dict(self) -> dict:
        return asdict(self)


def heat_in_lungs(heatmap: np.ndarray, lungs: np.ndarray) -> float | None:
    """The share of the map's energy inside the mask; ``None`` for an empty map."""
    total = float(heatmap.sum())
    return float(heatmap[lungs].sum()) / total if total > 0 else None


def focus(heatmap: np.ndarray, lungs: np.ndarray) -> Focus | None:
    """Every focus number of one map; ``None`` for an empty map."""
    share = heat_in_lungs(heatmap, lungs)
    if share is None:
        return None
    total = float(heatmap.sum())
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return Focus(heat_in_lungs=share, chance=float(lungs.mean()), peak_in_lungs=bool(lungs[peak]),
                 border=float(heatmap[border_strip(heatmap.shape)].sum()) / total,
                 corners=float(heatmap[corner_squares(heatmap.shape)].sum()) / total)


def border_strip(shape: tuple[int, int]) -> np.ndarray:
    rows, columns = shape
    r, c = max(1, round(BORDER * rows)), max(1, round(BORDER * columns))
    strip = np.ones(shape, dtype=bool)
    strip[r:rows - r, c:columns - c] = False
    return strip


def corner_squares(shape: tuple[int, int]) -> np.ndarray:
    rows, columns = shape
    r, c = max(1, round(CORNER * rows)), max(1, round(CORNER * columns))
    corners = np.zeros(shape, dtype=bool)
    for rs in (slice(0, r), slice(rows - r, rows)):
        for cs in (slice(0, c), slice(columns - c, columns)):
            corners[rs, cs] = True
    return corners
