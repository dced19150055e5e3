"""Training the lung segmenter on the human masks: the ``train`` films of every source of the mask folder
together (children and adults in shared/data/lung_masks), validation carved out by patient, MONAI's Dice +
cross-entropy loss, AdamW with cosine decay, the epoch with the best validation Dice kept; each source's
``test`` films are scored once at the end and never choose anything.

Films are read once into memory at the segmenter's side (uint8), so an epoch is arithmetic only; each batch
is augmented on the fly (small rotations, scaling and shifts, mirror, gamma and contrast).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pneumoscan.anatomy.frontal import fit_frontal_check
from pneumoscan.anatomy.masks import LungFilm, read_film, read_lung_films, read_mask, select, validation_split
from pneumoscan.anatomy.scores import film_scores, summary
from pneumoscan.anatomy.segmenter import LungNet, LungSegmenter, SegmenterSettings, save_segmenter
from pneumoscan.device import autocast_for, effective_precision
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import to_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentConfig:
    """The settings of ``pneumoscan segment train``; written to the run folder's config.json."""

    data: str = ""                     # the lung-mask folder (shared/data/lung_masks: MANIFEST.csv, masks)
    out: str = "runs/lungs"
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)
    epochs: int = 16                   # 16 with balance 0.5 beat 8 without on validation (docs/results.md)
    lr: float = 3e-3                   # cosine decay to lr_min
    lr_min: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    val_fraction: float = 0.08         # share of the training patients held out to choose the epoch
    seed: int = 0
    precision: str = "bf16"            # bf16 autocast where the CPU computes it natively, else fp32
    augment: bool = True
    balance: float = 0.5               # epochs draw films with weight n_source ** -balance: 0 = as they come,
                                       # 1 = every source equally often (a small adult source is seen more)
    films_per_source: int = 0          # at most this many training films of each source (0 = all): quick runs

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction}: choose a share in (0, 1)")


def load_split(films: list[LungFilm], side: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(films uint8 ``[N, S, S]``, masks ``[N, S, S]``: 0, 1 or ``IGNORED``) read at ``side``."""
    images, masks = [], []
    for film in tqdm(films, desc=desc, unit="film", leave=False):
        images.append(read_film(film.image, side))
        masks.append(read_mask(film.mask, side))
    return np.stack(images), np.stack(masks)


def augmented(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """A batch under random geometry (rotation +-10 degrees, scale 0.9-1.1, shift +-6%, mirror) and intensity
    (gamma 0.7-1.4, contrast 0.8-1.2): films bilinear, masks nearest."""
    n = images.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
    angle, scale = uniform(-10, 10) * math.pi / 180, uniform(0.9, 1.1)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = mirror * torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = mirror * torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, :, 2] = torch.stack([uniform(-0.06, 0.06), uniform(-0.06, 0.06)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gamma, contrast = uniform(0.7, 1.4)[:, None, None, None], uniform(0.8, 1.2)[:, None, None, None]
    images = images.clamp(0, 1) ** gamma
    mean = images.mean(dim=(2, 3), keepdim=True)
    return ((images - mean) * contrast + mean).clamp(0, 1), masks


def train_segmenter(config: SegmentConfig) -> Path:
    """Train, choose the epoch on validation, score both test sets once; returns the run folder."""
    from monai.losses import DiceCELoss

    folder = RunFolder(config.out)
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.config.write_text(json.dumps(to_dict(config), indent=2) + "\n")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    films, sources, train, val = training_films(config)
    side = config.segmenter.image_size
    train_x, train_y = load_split(train, side, "reading training films")
    val_x, val_y = load_split(val, side, "reading validation films")
    log.info("lung segmenter: %d training films (%d patients), %d validation films, at %d px", len(train),
             len({f.patient for f in train}), len(val), side)
    net = LungNet(config.segmenter).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=config.lr_min)
    loss_of = DiceCELoss(sigmoid=True)
    precision = effective_precision(config.precision, "cpu")
    generator = torch.Generator().manual_seed(config.seed)
    best, history = (-1.0, None), []
    weights = source_weights(train, config.balance)
    for epoch in range(config.epochs):
        net.train()
        order = (torch.multinomial(weights, len(train), replacement=True, generator=generator) if config.balance
                 else torch.randperm(len(train), generator=generator))
        losses = []
        for start in tqdm(range(0, len(train), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                          unit="batch", leave=False):
            rows = order[start:start + config.batch_size].numpy()
            images = torch.from_numpy(train_x[rows]).float()[:, None] / 255
            masks = torch.from_numpy((train_y[rows] == 1).astype(np.float32))[:, None]  # ignore counts as background
            if config.augment:
                images, masks = augmented(images, masks, generator)
            with autocast_for(torch.device("cpu"), precision):
                loss = loss_of(net(images.contiguous(memory_format=torch.channels_last)).float(), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        segmenter = LungSegmenter(net.eval(), config.segmenter)
        dice = film_scores(predicted_at_side(segmenter, val_x), list(val_y))["dice"]
        by_source = {source: float(dice[[f.source == source for f in val]].mean()) for source in sources
                     if any(f.source == source for f in val)}
        val_dice = float(np.mean(list(by_source.values())))  # every source counts, however few its films
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val_dice,
                        "val_dice_by_source": by_source, "seconds": round(elapsed, 1)})
        left = elapsed / (epoch + 1) * (config.epochs - epoch - 1)
        log.info("epoch %d/%d: loss %.4f, validation Dice %.4f; about %.0f min left", epoch + 1, config.epochs,
                 history[-1]["loss"], val_dice, left / 60)
        if val_dice > best[0]:
            best = (val_dice, {k: v.detach().clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[1])
    train_seconds = round(time.perf_counter() - started, 1)
    facts = {"trained_on": {**{f"{source}_train": sum(f.source == source for f in train) for source in sources},
                            "validation": len(val), "data": config.data},
             "chosen_epoch": int(np.argmax([h["val_dice"] for h in history]) + 1), "val_dice": best[0],
             "val_dice_by_source": history[int(np.argmax([h["val_dice"] for h in history]))]["val_dice_by_source"],
             "train_seconds": train_seconds}
    segmenter = LungSegmenter(net.eval(), config.segmenter, facts)
    segmenter.frontal = fit_frontal_check(segmenter, train_x, val_x, frontal_fitted_on(train, val))
    tests = {name: summary(film_scores(*masks_of(segmenter, select(films, source, "test"))))
             for source in sources for name in [f"{source}_test"] if select(films, source, "test")}
    segmenter.facts["test"] = tests
    save_segmenter(folder.segmenter, segmenter)
    folder.metrics.write_text(json.dumps({**facts, "test": tests, "history": history}, indent=2) + "\n")
    log.info("lung segmenter saved to %s (%.0f s); test Dice: %s", folder.segmenter, train_seconds,
             ", ".join(f"{name} {scores['dice']:.4f}" for name, scores in tests.items()))
    return folder.root


def training_films(config: SegmentConfig) -> tuple[list[LungFilm], list[str], list[LungFilm], list[LungFilm]]:
    """(every film of the mask folder, its sources, the training films, the validation films)."""
    films = read_lung_films(config.data)
    sources = sorted({f.source for f in films})
    pool = [f for source in sources for f in limited(select(films, source, "train"), config)]
    return (films, sources, *validation_split(pool, config.val_fraction, config.seed))


def frontal_fitted_on(train: list[LungFilm], val: list[LungFilm]) -> dict:
    return {"training_films": len(train), "validation_films": len(val),
            "sources": sorted({f.source for f in train}), "views": "frontal only"}


def refit_frontal_check(run: str | Path) -> LungSegmenter:
    """Fit the frontal check of a segmenter run trained before the check existed, on the run's own training and
    validation films (as its config.json chose them), and save it into the run's segmenter."""
    from pneumoscan.anatomy.segmenter import load_segmenter
    from pneumoscan.settings import load_settings

    folder = RunFolder(run)
    config = load_settings(SegmentConfig, file=folder.config)
    segmenter = load_segmenter(folder.segmenter)
    _, _, train, val = training_films(config)
    side = config.segmenter.image_size
    train_x, _ = load_split(train, side, "reading training films")
    val_x, _ = load_split(val, side, "reading validation films")
    segmenter.frontal = fit_frontal_check(segmenter, train_x, val_x, frontal_fitted_on(train, val))
    save_segmenter(folder.segmenter, segmenter)
    return segmenter


def source_weights(films: list[LungFilm], balance: float) -> torch.Tensor:
    """Each film's sampling weight: its source's film count to the power -``balance``."""
    counts = {source: sum(f.source == source for f in films) for source in {f.source for f in films}}
    return torch.tensor([counts[f.source] ** -balance for f in films], dtype=torch.float64)


def limited(films: list[LungFilm], config: SegmentConfig) -> list[LungFilm]:
    if not config.films_per_source or len(films) <= config.films_per_source:
        return films
    return [films[i] for i in np.linspace(0, len(films) - 1, config.films_per_source).round().astype(int)]


def predicted_at_side(segmenter: LungSegmenter, images: np.ndarray) -> list[np.ndarray]:
    """Masks of films already at the segmenter's side (uint8), at that side."""
    return segmenter.masks([image.astype(np.float32) / 255 for image in images])


def masks_of(segmenter: LungSegmenter, films: list[LungFilm]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(predicted, human) masks of ``films``, both at 224 x 224 (the side of the default task's films)."""
    from pneumoscan.data.io import load_image

    predicted, truth = [], []
    for film in tqdm(films, desc="scoring", unit="film", leave=False):
        predicted.append(segmenter.masks([load_image(film.image)], size=(224, 224))[0])
        truth.append(read_mask(film.mask, 224))
    return predicted, truth

