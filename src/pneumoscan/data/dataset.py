"""A torch ``Dataset`` of labelled images, optionally as several augmented views of each.

Item ``k`` is view ``k % views`` of sample ``k // views``; a view's augmentation is seeded by
(seed, sample, view), so it is identical across runs, workers and resumed trainings. With ``shifts``
instead, view ``v`` is the sample under the deterministic acquisition shift ``shifts[v]``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from pneumoscan.data.io import load_image
from pneumoscan.data.preprocess import Augmentation, Preprocessing, augment, view_generator
from pneumoscan.data.records import Sample
from pneumoscan.data.shifts import apply_shift


class XRayDataset(Dataset):
    """Images as network inputs: ``(tensor C x S x S, label, sample index)``."""

    def __init__(self, samples: list[Sample], preprocessing: Preprocessing, *,
                 augmentation: Augmentation | None = None, views: int = 1, seed: int = 0,
                 shifts: tuple[str, ...] = ()):
        if shifts:
            if augmentation is not None:
                raise ValueError("give either an augmentation or shifts, not both")
            views = len(shifts)
        if views > 1 and augmentation is None and not shifts:
            raise ValueError("several views of one image only make sense with an augmentation")
        self.samples = samples
        self.preprocessing = preprocessing
        self.augmentation = augmentation
        self.views = views
        self.seed = seed
        self.shifts = tuple(shifts)
        self.view_offset = 0  # added to the view index: lets one-view datasets draw a new view per epoch

    def __len__(self) -> int:
        return len(self.samples) * self.views

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        # Image operations must run in float32 even when called inside a caller's autocast (a
        # DataLoader without workers, or workers forked inside it): bf16 sampling grids and blurs
        # distort the image badly.
        with torch.autocast("cpu", enabled=False):
            return self._item(item)

    def _item(self, item: int) -> tuple[torch.Tensor, int, int]:
        index, view = divmod(item, self.views)
        sample = self.samples[index]
        image = self.preprocessing.resize(load_image(sample.path))
        if self.shifts:
            image = apply_shift(image, self.shifts[view], index=index)
        elif self.augmentation is not None:
            image = augment(image, self.augmentation,
                            view_generator(self.seed, index, view + self.view_offset))
        return self.preprocessing.normalize(image), sample.label, index


def stack_inputs(samples: list[Sample], preprocessing: Preprocessing) -> torch.Tensor:
    """The network inputs of ``samples`` (no augmentation) as one ``[N, C, S, S]`` tensor."""
    dataset = XRayDataset(samples, preprocessing)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])
