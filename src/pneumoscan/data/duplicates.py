"""Exact and near duplicate images, for data without patient ids: a group of duplicates stays on one side
of a split, and test images that duplicate a training image are counted and can be set apart.

Exact duplicates share their decoded 8-bit grey pixels. Near duplicates (re-encodings, resized copies,
neighbouring slices) are candidates from a perceptual hash
(``imagehash.phash``, 64 bits) within ``max_distance`` bits, confirmed by a pixel comparison (Pearson
correlation of the two images at 64 x 64 at least ``min_correlation``): the hash finds, the pixels decide.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pneumoscan.data.io import ImageLoadError, load_image

log = logging.getLogger(__name__)

COMPARE_SIZE = 64


@dataclass(frozen=True)
class Fingerprint:
    """What duplicate finding keeps of one image."""

    exact: str               # hash of the 8-bit grey pixels at full size
    phash: int               # 64-bit perceptual hash
    pixels: np.ndarray       # 64 x 64 float32, zero mean, unit norm (for the correlation)


def fingerprint(gray: np.ndarray) -> Fingerprint:
    grey = (np.clip(gray, 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(grey)
    small = np.asarray(image.resize((COMPARE_SIZE, COMPARE_SIZE), Image.BILINEAR), dtype=np.uint8)
    centred = small.astype(np.float32) - small.mean()
    norm = float(np.linalg.norm(centred))
    return Fingerprint(exact=hashlib.sha1(str(grey.shape).encode() + grey.tobytes()).hexdigest(),
                       phash=int(str(imagehash.phash(image)), 16), pixels=centred / norm if norm else centred)


def fingerprints(paths: list[str], *, desc: str = "hashing images") -> list[Fingerprint | None]:
    """Each path's fingerprint (None where the file cannot be read)."""
    out = []
    for path in tqdm(paths, desc=desc, unit="img", leave=False):
        try:
            out.append(fingerprint(load_image(path)))
        except ImageLoadError as err:
            log.warning("not hashed: %s", err)
            out.append(None)
    return out


def _bits(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes as a [N, 64] 0/1 matrix (for all pairwise Hamming distances at once)."""
    as_bytes = hashes.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).astype(np.float32)


def duplicate_pairs(queries: list[Fingerprint | None], pool: list[Fingerprint | None], *, max_distance: int = 6,
                    min_correlation: float = 0.95, same: bool = False) -> list[tuple[int, int, str]]:
    """(query index, pool index, "exact" or "near") for every duplicate pair; ``same`` when queries is pool
    (each pair once, an image not with itself)."""
    valid_q = [i for i, f in enumerate(queries) if f is not None]
    valid_p = [j for j, f in enumerate(pool) if f is not None]
    if not valid_q or not valid_p:
        return []
    exact_index: dict[str, list[int]] = {}
    for j in valid_p:
        exact_index.setdefault(pool[j].exact, []).append(j)
    bits_p = _bits(np.array([pool[j].phash for j in valid_p], dtype=np.uint64))
    pixels_p = np.stack([pool[j].pixels.ravel() for j in valid_p])
    pairs = []
    for start in range(0, len(valid_q), 512):
        chunk = valid_q[start:start + 512]
        bits_q = _bits(np.array([queries[i].phash for i in chunk], dtype=np.uint64))
        distance = bits_q @ (1 - bits_p).T + (1 - bits_q) @ bits_p.T  # Hamming distances [chunk, pool]
        for row, i in enumerate(chunk):
            exact = set(exact_index.get(queries[i].exact, []))
            candidates = np.flatnonzero(distance[row] <= max_distance)
            near = set()
            if len(candidates):
                correlation = pixels_p[candidates] @ queries[i].pixels.ravel()
                near = {valid_p[c] for c, r in zip(candidates, correlation) if r >= min_correlation}
            for j in sorted(exact | near):
                if same and j <= i:
                    continue
                pairs.append((i, j, "exact" if j in exact else "near"))
    return pairs


def duplicate_groups(paths: list[str], **options) -> list[int]:
    """A group id per path: images joined by a chain of duplicates share one (union-find)."""
    prints = fingerprints(paths)
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in duplicate_pairs(prints, prints, same=True, **options):
        parent[root(i)] = root(j)
    roots = [root(i) for i in range(len(paths))]
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [number[r] for r in roots]


def duplicates_of(queries: list[str], pool: list[str], **options) -> dict[int, str]:
    """{query index: "exact" or "near"} for each query image with a duplicate in ``pool`` (e.g. test in train)."""
    found: dict[int, str] = {}
    for i, _, kind in duplicate_pairs(fingerprints(queries, desc="hashing queries"), fingerprints(pool), **options):
        if found.get(i) != "exact":
            found[i] = kind
    return found
