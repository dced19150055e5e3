"""Batch scoring on a Ray cluster (``pneumoscan predict MODEL INPUTS --engine ray``), for archives too large
for one machine. Ray Data reads the file list, stateful actors (``map_batches`` with a callable class)
each load the model once and screen their batches with the same ``screen.Screener`` the local path uses,
and the screenings come back in input order, so the CSV is the local path's. Broken files are screened
as unreadable, never stop the job.

On one machine Ray starts a local instance; ``address`` joins a running cluster (``ray start --head`` on
one node, ``ray start --address HEAD:6379`` on the others). Every node must read the model and the
images at the same paths: a shared file system, or copies at the same place.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from pathlib import Path

from pneumoscan.inference.screen import Screening, load

log = logging.getLogger(__name__)

INSTALL = "Ray is not installed: pip install 'pneumoscan[ray]' (or pip install 'ray[data]')"
KEPT = [f.name for f in fields(Screening) if f.name not in ("heatmap", "image")]  # what travels back


class ScreenBatches:
    """One Ray actor: loads the model once, then screens every batch it is given."""

    def __init__(self, model: str, runtime: str, precision: str, threads: int):
        import torch

        torch.set_num_threads(threads)  # PyTorch's threads, and those of the runtime below: one actor per share
        self.screener = load(model, runtime=runtime, precision=precision, threads=threads)

    def __call__(self, batch: dict) -> dict:
        results = self.screener.screen(list(batch["path"]), batch_size=len(batch["path"]), progress=False)
        rows = [{k: v for k, v in asdict(r).items() if k in KEPT} for r in results]
        return {"index": batch["index"], "screening": rows}


def screen_with_ray(model: str | Path, paths: list[str], *, address: str = "", actors: int = 2,
                    batch_size: int = 16, runtime: str = "auto", precision: str = "fp32") -> list[Screening]:
    """Screen ``paths`` on a Ray cluster (a local one without ``address``); one Screening per path, in order."""
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        items = ray.data.from_items([{"index": i, "path": str(p)} for i, p in enumerate(paths)],
                                    override_num_blocks=max(1, min(len(paths) // batch_size, 4 * actors)))
        threads = max(1, int(ray.cluster_resources().get("CPU", actors)) // actors)
        screened = items.map_batches(ScreenBatches, fn_constructor_args=(str(model), runtime, precision, threads),
                                     batch_size=batch_size, concurrency=actors, num_cpus=threads,
                                     batch_format="default")
        rows = sorted(screened.take_all(), key=lambda row: row["index"])
    finally:
        if started_here:
            ray.shutdown()
    return [Screening(**row["screening"]) for row in rows]
