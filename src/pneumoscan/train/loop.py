"""The training loop of one stage: AdamW, cosine decay, class-weighted BCE (two classes) or
cross-entropy (more), early stopping on a validation score (ROC-AUC, or accuracy, which still moves
once a many-class AUC has saturated; ties go to the lower validation loss), and a resumable state
saved atomically after every epoch.

A stage trains ``module`` (called on a batch of inputs, returning logits ``[B]`` or ``[B, K]``) on
batches from a ``BatchSource``. Under torchrun each rank trains on its slice of every global batch
(``distributed``); a step is that of one process on the whole batch. All randomness of an epoch (batch
order, view choice, dropout) derives from (seed, stage, epoch), so a run resumed after a kill ends
exactly where an uninterrupted one would.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from pneumoscan.device import autocast_for
from pneumoscan.distributed import SINGLE, Ranks, batch_wide, from_main, gathered, wrapped
from pneumoscan.storage import atomic_save

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """Anything that yields an epoch of ``(inputs, labels, global batch size)``, reproducibly per epoch: this
    rank's slice of each global batch (the whole batch in one process)."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor, int]]: ...


@dataclass
class StageSettings:
    name: str
    epochs: int
    lr: float
    lr_min: float
    weight_decay: float
    patience: int
    pos_weight: float                 # two classes: BCE's positive-class weight
    seed: int
    precision: str
    device: torch.device
    class_weights: tuple[float, ...] = ()  # more classes: cross-entropy's weight per class
    select_on: str = "auc"            # the validation score that picks the best epoch: "auc" or "accuracy"
    label_smoothing: float = 0.0      # more classes: cross-entropy's label smoothing

    def loss(self) -> nn.Module:
        if self.class_weights:
            return nn.CrossEntropyLoss(weight=torch.tensor(self.class_weights, device=self.device),
                                       label_smoothing=self.label_smoothing)
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.pos_weight], device=self.device))


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    """The seed of one epoch of one stage."""
    return (seed * 7919 + sum(map(ord, stage)) * 104_729 + epoch) % (2**31)


class ArraySource:
    """Batches from cached arrays: each epoch uses one random view of every image.

    ``features`` has ``len(labels) * views`` rows (row ``i * views + v`` is view ``v`` of image
    ``i``), or ``len(labels)`` rows when ``views == 1``.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, *, views: int, batch_size: int,
                 seed: int, stage: str, shape: tuple[int, ...] | None = None, ranks: Ranks = SINGLE):
        self.features, self.labels, self.views = features, np.asarray(labels), views
        self.batch_size, self.seed, self.stage, self.shape, self.ranks = batch_size, seed, stage, shape, ranks

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        rng = np.random.default_rng(epoch_seed(self.seed, self.stage, epoch))
        order = rng.permutation(len(self.labels))
        view = rng.integers(0, self.views, size=len(self.labels))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            # the global batch in file order (memory-mapped reads are faster so), then this rank's slice: the
            # ranks' slices, concatenated, are the one-process batch row for row
            in_file_order = np.argsort(batch * self.views + view[batch])
            images = batch[in_file_order][self.ranks.local_rows(len(batch))]
            rows = images * self.views + view[images]
            x = torch.from_numpy(np.asarray(self.features[rows], dtype=np.float32))
            if self.shape is not None:
                x = x.view(len(rows), *self.shape)
            yield x, torch.from_numpy(self.labels[images]).float(), len(batch)


class LoaderSource:
    """Batches of freshly augmented images: epoch ``e`` uses augmentation view ``e`` of each image. Each
    rank decodes only its slice of every global batch."""

    def __init__(self, dataset, *, batch_size: int, workers: int, seed: int, stage: str, ranks: Ranks = SINGLE):
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.seed, self.stage, self.ranks = seed, stage, ranks

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        from torch.utils.data import DataLoader

        self.dataset.view_offset = epoch
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.stage, epoch))
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        local = [batch[self.ranks.local_rows(len(batch))] for batch in batches]
        loaded = iter(DataLoader(self.dataset, batch_sampler=[rows for rows in local if rows],
                                 num_workers=self.workers))
        for rows, batch in zip(local, batches):
            if not rows:  # a last batch smaller than the number of ranks: this rank has nothing to add
                size = self.dataset.preprocessing.image_size
                yield torch.zeros(0, self.dataset.preprocessing.channels, size, size), torch.zeros(0), len(batch)
                continue
            x, y, _ = next(loaded)
            yield x, y.float(), len(batch)


def run_stage(module: nn.Module, params: list[nn.Parameter], train: BatchSource,
              validate: Callable[[nn.Module], tuple[np.ndarray, np.ndarray]], settings: StageSettings, *,
              state_path: Path, history: list[dict], global_epoch: int = 0,
              on_epoch: Callable[[dict], None] | None = None, ranks: Ranks = SINGLE) -> nn.Module:
    """Train ``module`` for one stage; returns it with the weights of its best validation epoch.

    ``validate(module)`` returns (labels, logits) on the validation set (rank 0 calls it; every rank gets
    its result). ``history`` gets one row per epoch, also passed to ``on_epoch`` (which may raise to
    stop, as a pruned tuning trial does). When ``state_path`` holds an unfinished state of this stage,
    training resumes there; rank 0 alone writes it.
    """
    device = settings.device
    trained = wrapped(batch_wide(module, ranks, device), ranks, device)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps = max(1, settings.epochs * len(train))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=settings.lr_min)
    loss_fn = settings.loss()
    best = {"score": -1.0, "loss": math.inf, "epoch": -1, "state": copy.deepcopy(module.state_dict())}
    start_epoch, bad_epochs = 0, 0
    if state_path.exists():
        saved = torch.load(state_path, map_location=device, weights_only=True)
        if saved["stage"] == settings.name:
            module.load_state_dict(saved["module"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            best, start_epoch, bad_epochs = saved["best"], saved["epoch"] + 1, saved["bad_epochs"]
            history[:] = saved["history"]
            log.info("stage %s: resuming after epoch %d", settings.name, saved["epoch"] + 1)

    for epoch in range(start_epoch, settings.epochs):
        if bad_epochs >= settings.patience:
            break
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(settings.seed, settings.name + "/dropout", epoch))
        train_stats = _train_one_epoch(trained, train.epoch(epoch), optimizer, scheduler, loss_fn, settings,
                                       desc=f"{settings.name} {epoch + 1}/{settings.epochs}", total=len(train),
                                       ranks=ranks)
        y_val, logits_val = from_main(ranks, validate(module) if ranks.main else None)
        val_stats = _stats(y_val, logits_val, loss_fn)
        row = {"stage": settings.name, "epoch": epoch + 1, "global_epoch": global_epoch + epoch + 1,
               "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 2),
               **{f"train_{k}": v for k, v in train_stats.items()}, **{f"val_{k}": v for k, v in val_stats.items()}}
        history.append(row)
        improved = _better(val_stats, best, settings.select_on)
        if improved:
            best = {"score": val_stats[settings.select_on], "loss": val_stats["loss"], "epoch": epoch + 1,
                    "state": copy.deepcopy(module.state_dict())}
            bad_epochs = 0
        else:
            bad_epochs += 1
        log.info("stage %s epoch %d: train loss %.4f auc %.4f | val loss %.4f acc %.4f auc %.4f%s (%.1fs)",
                 settings.name, epoch + 1, train_stats["loss"], train_stats["auc"], val_stats["loss"],
                 val_stats["accuracy"], val_stats["auc"], " *" if improved else "", row["seconds"])
        if ranks.main:
            atomic_save({"stage": settings.name, "epoch": epoch, "module": module.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "best": best, "bad_epochs": bad_epochs, "history": history}, state_path)
        if on_epoch is not None:
            on_epoch(row)
    if bad_epochs >= settings.patience:
        log.info("stage %s: early stop, best validation %s %.4f at epoch %d", settings.name, settings.select_on,
                 best["score"], best["epoch"])
    module.load_state_dict(best["state"])
    return batch_wide(module, ranks, device, undo=True)


def _better(val_stats: dict[str, float], best: dict, select_on: str) -> bool:
    """Whether this epoch beats the best so far: a higher score, or the same score at a lower loss."""
    score = val_stats[select_on]
    return score > best["score"] + 1e-6 or (abs(score - best["score"]) <= 1e-6 and val_stats["loss"] < best["loss"])


def _train_one_epoch(module, batches, optimizer, scheduler, loss_fn, settings: StageSettings, *, desc, total,
                     ranks: Ranks = SINGLE):
    module.train()
    labels, logits, losses = [], [], []
    for x, y, global_size in tqdm(batches, desc=desc, total=total, leave=False, unit="batch",
                                  disable=not ranks.main):
        x, y = x.to(settings.device, non_blocking=True), y.to(settings.device)
        with autocast_for(settings.device, settings.precision):
            out = module(x)
        # weighted by this rank's share of the global batch: DDP's gradient average is then the global mean's
        if len(y):
            loss = loss_fn(out.float(), _targets(y, out)) * (len(y) * ranks.world / global_size)
        else:  # no rows here this step: a zero loss still takes part in the gradient average
            loss = out.float().sum() * 0.0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item() * global_size / ranks.world)
        labels.append(y.cpu().numpy())
        logits.append(out.detach().float().cpu().numpy())
    y, z = gathered(ranks, np.concatenate(labels)), gathered(ranks, np.concatenate(logits))
    return {"loss": float(np.sum(gathered(ranks, np.array(losses))) / len(y)), **_accuracy_auc(y, z)}


def _targets(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Labels as the loss wants them: floats for one logit (BCE), class indices for several (cross-entropy)."""
    return y.float() if out.ndim == 1 else y.long()


def _accuracy_auc(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    if logits.ndim == 1:
        auc = float(roc_auc_score(y, logits)) if len(np.unique(y)) == 2 else float("nan")
        return {"accuracy": float(np.mean((logits >= 0) == (y > 0.5))), "auc": auc}
    labels = y.astype(int)
    probabilities = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
    present = len(np.unique(labels)) == logits.shape[1]
    auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")) if present else float("nan")
    return {"accuracy": float(np.mean(logits.argmax(1) == labels)), "auc": auc}


def _stats(y: np.ndarray, logits: np.ndarray, loss_fn) -> dict[str, float]:
    device = next(iter(loss_fn.buffers())).device
    with torch.no_grad():
        out = torch.as_tensor(logits, dtype=torch.float32, device=device)
        loss = loss_fn(out, _targets(torch.as_tensor(y, device=device), out)).item()
    return {"loss": float(loss), **_accuracy_auc(np.asarray(y), np.asarray(logits))}
