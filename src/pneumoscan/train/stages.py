"""The training stages of a run: ``head`` (the new head on cached, pooled frozen-trunk features),
``tail`` (the last trunk block and the head on cached trunk activations) and ``full`` (every layer, on
images); each one an explicit loop from ``train.loop`` with early stopping on a validation score. A head
stage that ends with its hidden layer dead (no ReLU on for any training example, so the output no longer
depends on the image) is run once more from a fresh head at a third of its learning rate."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumoscan.cache import batched_logits, cached_activations, cached_outputs
from pneumoscan.data.dataset import XRayDataset
from pneumoscan.data.records import Sample
from pneumoscan.distributed import SINGLE, Ranks, main_first
from pneumoscan.inference.predict import predict_logits
from pneumoscan.models.networks import ClassifierHead, ScreeningNet, TailAndHead
from pneumoscan.run_folder import RunFolder
from pneumoscan.train.config import TrainConfig
from pneumoscan.train.loop import ArraySource, LoaderSource, StageSettings, epoch_seed, run_stage
from pneumoscan.train.setup import labels_of

log = logging.getLogger(__name__)
RETRY_LR_FACTOR = 1 / 3  # a dead ResNet50 head at 1e-3 learned at 3e-4 (docs/experiments.md)


class HeadOnPooled(nn.Module):
    """The head applied to already pooled features ``[B, C]`` (pooling a 1 x 1 map changes nothing)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled[:, :, None, None]).squeeze(1)  # [B] for one logit, [B, K] for several


def stage_settings(stage: str, config: TrainConfig, weights: tuple[float, ...], device) -> StageSettings:
    """``weights``: the class weights (one value: BCE's positive-class weight; several: cross-entropy's)."""
    schedule = config.stage(stage)
    return StageSettings(
        name=stage, epochs=schedule.epochs, lr=schedule.lr, lr_min=schedule.lr_min,
        weight_decay=config.weight_decay, patience=config.patience,
        pos_weight=weights[0] if len(weights) == 1 else 1.0, class_weights=weights if len(weights) > 1 else (),
        seed=config.seed, precision=config.precision, device=device,
        select_on=config.selection_score(len(weights) if len(weights) > 1 else 2),
        label_smoothing=config.label_smoothing)


def run_training_stage(stage: str, model: ScreeningNet, config: TrainConfig, splits: dict[str, list[Sample]],
                       pool: list[Sample], weights: tuple[float, ...], device, folder: RunFolder,
                       history: list[dict], on_epoch=None, ranks: Ranks = SINGLE) -> None:
    """Train one stage in place, resuming from the folder's epoch state when a killed run left one."""
    settings = stage_settings(stage, config, weights, device)
    common = dict(state_path=folder.epoch_state, history=history,
                  global_epoch=history[-1]["global_epoch"] if history else 0, on_epoch=on_epoch, ranks=ranks)
    if stage == "full":
        module, source, validate = _full_stage(model, config, splits, device, ranks)
    else:
        module, source, validate = _cached_stage(stage, model, config, splits, pool, device, ranks)
    params = [p for p in module.parameters() if p.requires_grad]
    run_stage(module, params, source, validate, settings, **common)
    if stage == "head" and head_is_dead(model.head, source.features):
        log.warning("stage head: every hidden unit of the head is off for every training example (its output "
                    "no longer depends on the image); training a fresh head at a third of the learning rate")
        reset_head(model.head, config.seed)
        retry = replace(settings, name="head-retry", lr=settings.lr * RETRY_LR_FACTOR,
                        lr_min=settings.lr_min * RETRY_LR_FACTOR)
        common["global_epoch"] = history[-1]["global_epoch"]
        run_stage(module, params, source, validate, retry, **common)
        if head_is_dead(model.head, source.features):
            log.warning("stage head-retry: the fresh head died as well; the run goes on with it (try a lower "
                        "head.lr)")
    model.tail.requires_grad_(True)
    model.frozen_tail_units = 0


def _full_stage(model: ScreeningNet, config: TrainConfig, splits, device, ranks: Ranks):
    """Every layer, on augmented images read by a DataLoader; validation on the clean images."""
    model.freeze_trunk(False)
    dataset = XRayDataset(splits["train"], model.preprocessing, augmentation=config.augmentation, seed=config.seed)
    source = LoaderSource(dataset, batch_size=config.batch_size, workers=config.workers, seed=config.seed,
                          stage="full", ranks=ranks)
    val_y, val_paths = labels_of(splits["val"]), [s.path for s in splits["val"]]

    def validate(module):
        return val_y, predict_logits(module, val_paths, batch_size=64, workers=config.workers,
                                     precision=config.precision, device=device, desc="validating")[0]

    return model, source, validate


def _cached_stage(stage: str, model: ScreeningNet, config: TrainConfig, splits, pool, device, ranks: Ranks):
    """``head`` on cached pooled features, or ``tail`` on cached trunk activations (augmented views). Rank 0
    computes the caches; the other ranks read them."""
    model.freeze_trunk(True)
    with main_first(ranks):
        augmented, clean = trunk_activations(model, config, pool, device)
    train_rows, val_rows = cache_rows(pool, splits["train"], config.train_views), cache_rows(pool, splits["val"], 1)
    train_y, val_y = labels_of(splits["train"]), labels_of(splits["val"])
    if stage == "head":
        model.tail.requires_grad_(False)
        common = dict(precision=config.precision, device=device)
        with main_first(ranks):
            pooled_train = cached_outputs(pooling(model), augmented, folder=Path(augmented.filename).parent,
                                          **common)[train_rows]
            val_inputs = cached_outputs(pooling(model), clean, folder=Path(clean.filename).parent,
                                        **common)[val_rows]
        module, train_inputs = HeadOnPooled(model.head), pooled_train
    else:
        model.tail.requires_grad_(True)
        model.train_tail_fraction(config.tail.fraction)
        module, train_inputs, val_inputs = TailAndHead(model), augmented[train_rows], clean[val_rows]
    source = ArraySource(train_inputs, train_y, views=config.train_views, batch_size=config.batch_size,
                         seed=config.seed, stage=stage, ranks=ranks)

    def validate(module):
        return val_y, batched_logits(module, val_inputs, batch_size=128, precision=config.precision, device=device)

    return module, source, validate


def head_is_dead(head: ClassifierHead, pooled: np.ndarray, chunk: int = 2048) -> bool:
    """Whether the head's hidden ReLU is off for every unit on every row of ``pooled`` (``[N, C]``)."""
    parameter = next(head.parameters())
    with torch.no_grad():
        for start in range(0, len(pooled), chunk):
            x = torch.as_tensor(np.asarray(pooled[start:start + chunk], dtype=np.float32), device=parameter.device)
            if (head.hidden_activations(x.to(parameter.dtype)) > 0).any():
                return False
    return True


def reset_head(head: nn.Module, seed: int) -> None:
    """New initial weights for every layer of the head (seeded, so a rerun retries the same way)."""
    torch.manual_seed(epoch_seed(seed, "head-retry/init", 0))
    for layer in head.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()


def cache_rows(pool: list[Sample], samples: list[Sample], views: int) -> np.ndarray:
    """Row indices, in a pool-ordered cache with ``views`` rows per image, of every view of ``samples``."""
    position = {s.path: i for i, s in enumerate(pool)}
    index = np.array([position[s.path] for s in samples])
    return (index[:, None] * views + np.arange(views)[None, :]).ravel()


def trunk_activations(model: ScreeningNet, config: TrainConfig, pool: list[Sample], device):
    """The frozen trunk's cached outputs for the whole pool: augmented views, and the clean view. Without
    augmentation (one view, ``Augmentation.none()``: the quick recipe) the clean views are the training views."""
    if config.trains_on_clean_views():
        clean = clean_activations(model, config, pool, device)
        return clean, clean
    augmented = cached_activations(model.trunk, pool, model.preprocessing, augmentation=config.augmentation,
                                   views=config.train_views, desc="caching augmented views",
                                   **cache_options(config, device))
    return augmented, clean_activations(model, config, pool, device)


def clean_activations(model: ScreeningNet, config: TrainConfig, samples: list[Sample], device):
    """The frozen trunk's cached outputs for ``samples``' clean images (one view each)."""
    return cached_activations(model.trunk, samples, model.preprocessing, augmentation=None, views=1,
                              desc="caching clean views", **cache_options(config, device))


def cache_options(config: TrainConfig, device) -> dict:
    return dict(view_seed=0, cache_dir=config.cache_dir, workers=config.workers, precision=config.precision,
                device=device, engine=config.cache_engine)


def pooling(model: ScreeningNet) -> nn.Module:
    """tail -> global average pooling: the head's input, from trunk activations."""
    return nn.Sequential(model.tail, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
