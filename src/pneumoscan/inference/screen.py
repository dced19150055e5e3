"""Screening: the one object that every entry point decides with (``predict``, ``evaluate``, ``explain``,
the web API, export's parity check and the benchmarks), so they cannot disagree.

``load(path)`` opens a run folder, a ``model.pt``, an exported ``.onnx`` or an OpenVINO ``.xml``;
``Screener.screen(images)`` reads each file, runs the input checks and the model, and returns one
``Screening`` per image, in input order:

- ``scored``: class probabilities and label; ``flagged`` when the image is unlike the training
  population (another hospital, adults, another device), with a warning that the output is less
  reliable there;
- ``refused``: not the model's modality (a photo, document, screenshot, noise, another modality),
  blank or colour, or, for a model that draws the lungs, not a frontal film (a lateral view, no pair of
  lungs); the reason, and no probability;
- ``unreadable``: the file could not be read; the problem, and the batch goes on.

A model that carries a lung segmenter (``pneumoscan segment attach``) also gives each scored film its lung
mask's share of the film (``lung_area_fraction``) and the share of its heatmap's energy inside the lungs
(``heat_in_lungs``); the mask itself comes with the heatmap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pneumoscan.anatomy.focus import heat_in_lungs
from pneumoscan.anatomy.frontal import frontal_refusal
from pneumoscan.anatomy.regions import lung_mask, lung_regions
from pneumoscan.data.io import MAX_PIXELS, ImageLoadError, NotFrontal, read_image
from pneumoscan.data.records import expand_inputs
from pneumoscan.data.tasks import with_article
from pneumoscan.inference.runtime import load_runtime
from pneumoscan.input_checks.checks import rule_refusal
from pneumoscan.models.description import ModelDescription

log = logging.getLogger(__name__)

SCORED, REFUSED, UNREADABLE = "scored", "refused", "unreadable"
Source = str | Path | tuple[str, bytes]  # a path, or (name, file bytes) for an upload


@dataclass(frozen=True)
class Screening:
    """What screening said about one image."""

    source: str
    status: str                                   # SCORED, REFUSED or UNREADABLE
    reason: str = ""                              # why it was refused or could not be read
    probabilities: dict[str, float] = field(default_factory=dict)  # per class, when scored
    label: str = ""                               # the decision, when scored
    threshold: float | None = None                # the positive-class threshold of a two-class model
    flagged: bool = False                         # scored, but unlike the training population
    warning: str = ""                             # what the flag means for this image
    shift_score: float | None = None              # population-shift score (higher: less like training)
    modality_probability: float | None = None     # the gate's probability that the image is of the modality
    heatmap: np.ndarray | None = field(default=None, repr=False)  # [S, S] in [0, 1], when asked for: Grad-CAM
    explained: str = ""                           # of this class's evidence (the label unless another was asked)
    image: np.ndarray | None = field(default=None, repr=False)    # the resized grey input, with the heatmap
    lung_area_fraction: float | None = None       # the lung mask's share of the film (a model that draws the lungs)
    heat_in_lungs: float | None = None            # the explained class's heatmap energy inside the lungs (a share)
    lungs: np.ndarray | None = field(default=None, repr=False)    # [S, S] bool lung mask, with the heatmap

    @property
    def scored(self) -> bool:
        return self.status == SCORED

    @property
    def probability(self) -> float | None:
        """The positive class's probability for a two-class model, else the label's; None unless scored."""
        if not self.scored:
            return None
        classes = list(self.probabilities)
        return self.probabilities[classes[1] if len(classes) == 2 else self.label]


class Screener:
    """A model with its description (preprocessing, classes, threshold, words) and input checks, behind one
    ``screen`` call."""

    def __init__(self, engine, *, max_pixels: int = MAX_PIXELS):
        self.engine = engine
        self.max_pixels = max_pixels
        self.preprocessing = engine.preprocessing
        self.description: ModelDescription = engine.description
        self.classes: tuple[str, ...] = self.description.classes
        self.threshold: float = self.description.threshold
        self.limits: dict = self.description.input_checks or {}
        self.modality: str = self.description.modality
        self.frontal_limits: dict | None = (self.description.anatomy or {}).get("frontal_check")

    @property
    def draws_lungs(self) -> bool:
        """Whether each screening has a lung mask, ``lung_area_fraction`` and ``heat_in_lungs``."""
        return self.description.anatomy is not None

    @property
    def runtime(self) -> str:
        return self.engine.runtime

    @property
    def precision(self) -> str:
        return self.engine.precision

    def screen(self, sources: Source | Iterable[Source], *, heatmaps: bool = False, batch_size: int = 16,
               progress: bool = True, desc: str = "screening", target: str | None = None) -> list[Screening]:
        """One ``Screening`` per image, in order; unreadable and refused files never stop the batch.

        ``sources``: one path, a folder (its images, found by content, recursively), a CSV with a ``path``
        column, ``(name, bytes)`` of an upload, or a list of any of these, expanded as ``pneumoscan predict``
        expands its arguments. With ``heatmaps``, each scored image carries the Grad-CAM of its label's
        evidence, or of ``target`` (a class name) when given."""
        sources = expanded_sources(sources)
        explained = self.class_index(target) if target else None
        results: list[Screening] = []
        for start in tqdm(range(0, len(sources), batch_size), desc=desc, unit="batch", leave=False,
                          disable=not progress or len(sources) <= batch_size):
            results += self._screen_batch(sources[start:start + batch_size], heatmaps, explained)
        return results

    def screen_one(self, source: Source, *, heatmap: bool = False, target: str | None = None) -> Screening:
        return self._screen_batch([source], heatmap, self.class_index(target) if target else None)[0]

    def class_index(self, name: str) -> int:
        """The index of a class named by the user (case as they like), or a ``ValueError`` listing the classes."""
        lowered = [c.lower() for c in self.classes]
        if name.lower() not in lowered:
            raise ValueError(f"class {name!r}: this model's classes are {list(self.classes)}")
        return lowered.index(name.lower())

    def _screen_batch(self, sources: list[Source], heatmaps: bool, explained: int | None = None) -> list[Screening]:
        outcomes = [self._decode(source) for source in sources]
        waiting = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Screening)]
        if waiting:
            batch = torch.stack([self.preprocessing.normalize(outcomes[i]) for i in waiting]).numpy()
            outputs = self.engine.run(batch)
            for row, i in enumerate(waiting):
                outcomes[i] = self._decide(_name(sources[i]), {k: v[row] for k, v in outputs.items()},
                                           outcomes[i][0].numpy() if heatmaps else None, heatmaps, explained)
        return outcomes

    def _decode(self, source: Source) -> Screening | torch.Tensor:
        """The resized grey network input ``[1, S, S]``, or the Screening of a file that stops here."""
        name = _name(source)
        try:
            gray, colour = read_image(source[1] if isinstance(source, tuple) else source, name=name,
                                      max_pixels=self.max_pixels)
        except NotFrontal as err:
            return Screening(name, REFUSED, reason=err.problem)
        except ImageLoadError as err:
            return Screening(name, UNREADABLE, reason=err.problem)
        refusal = rule_refusal(gray, colour, self.modality)
        if refusal:
            return Screening(name, REFUSED, reason=refusal)
        return self.preprocessing.resize(gray)

    def _decide(self, name: str, out: dict[str, np.ndarray], image: np.ndarray | None, heatmap: bool,
                explained: int | None = None) -> Screening:
        modality = float(out["modality_probability"])
        shift = float(out["shift_score"])
        gate_threshold = self.limits.get("gate_threshold")
        if gate_threshold is not None and modality < gate_threshold:
            return Screening(name, REFUSED, modality_probability=modality, shift_score=shift,
                             reason=f"this does not look like {with_article(self.modality)} (modality probability "
                                    f"{modality:.3f} < {gate_threshold:.2f}); it was not scored")
        lungs = lung_mask(out["lungs"]) if "lungs" in out else None
        refusal = self._frontal_refusal(lungs, out)
        if refusal:
            return Screening(name, REFUSED, modality_probability=modality, shift_score=shift, reason=refusal,
                             lung_area_fraction=float(lungs.mean()))
        probabilities = {c: float(p) for c, p in zip(self.classes, out["probabilities"])}
        flag_threshold = self.limits.get("shift_threshold")
        flagged = flag_threshold is not None and shift > flag_threshold
        warning = (f"unlike {self.description.population}, on which the model was trained "
                   f"and validated (population-shift score {shift:.2f} > {flag_threshold:.2f}): its output is "
                   f"less reliable here" if flagged else "")
        label = self.decide(probabilities)
        explained = self.classes.index(label) if explained is None else explained
        anatomy = ({} if lungs is None else
                   {"lung_area_fraction": float(lungs.mean()), "lungs": lungs if heatmap else None,
                    "heat_in_lungs": heat_in_lungs(out["heatmaps"][explained], lungs)})
        return Screening(name, SCORED, probabilities=probabilities, label=label,
                         threshold=self.threshold if len(self.classes) == 2 else None, flagged=flagged,
                         warning=warning, shift_score=shift, modality_probability=modality,
                         heatmap=out["heatmaps"][explained] if heatmap else None,
                         explained=self.classes[explained] if heatmap else "", image=image, **anatomy)

    def _frontal_refusal(self, lungs: np.ndarray | None, out: dict[str, np.ndarray]) -> str:
        """Why a film is not a frontal chest film (``anatomy.frontal``), or ""."""
        if lungs is None or not self.frontal_limits:
            return ""
        return frontal_refusal(lung_regions(lungs).smaller_share, float(out["frontal_novelty"]), self.frontal_limits)

    def decide(self, probabilities: dict[str, float]) -> str:
        """Two classes: the positive class at or above the threshold; more: the most probable class."""
        classes = list(probabilities)
        if len(classes) == 2:
            return classes[1] if probabilities[classes[1]] >= self.threshold else classes[0]
        return max(classes, key=probabilities.__getitem__)


def expanded_sources(sources: Source | Iterable[Source]) -> list[Source]:
    """Folders and CSVs replaced by the images they list; one source becomes a list of one."""
    if isinstance(sources, str | Path) or _is_upload(sources):
        sources = [sources]
    return [item for source in sources
            for item in (expand_inputs([source]) if isinstance(source, str | Path) else [source])]


def _is_upload(source) -> bool:
    return isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], bytes)


def _name(source: Source) -> str:
    return source[0] if isinstance(source, tuple) else str(source)


def load(path: str | Path, *, runtime: str = "auto", precision: str = "fp32", threads: int = 0,
         max_pixels: int = MAX_PIXELS) -> Screener:
    """The screener of a run folder, ``model.pt``, exported ``.onnx`` or OpenVINO ``.xml``
    (``runtime``: one of ``runtime.RUNTIMES``; ``precision`` applies to PyTorch and OpenVINO; ``threads``
    caps onnxruntime's and OpenVINO's threads, 0 for every core)."""
    return Screener(load_runtime(path, precision=precision, runtime=runtime, threads=threads), max_pixels=max_pixels)
