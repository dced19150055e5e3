"""What a model is, as one frozen record that travels with it (as torchvision's ``Weights.meta`` does): its
task and classes with a reader's words for them, the modality it screens and the population it was validated
on, its intended use and limits, architecture and preprocessing, threshold and its interval, its input checks
and what they were fitted on, and its metrics.

Training writes it (``describe``, with the task's words from ``task_words``); ``model.pt`` stores it, the ONNX
and OpenVINO files embed it, and the model card, the web page, ``/v1/model``, ``pneumoscan describe`` and
``Screener.description`` read it, so none of them rebuilds these facts or says more than the run knew.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pneumoscan.data.known import known_task
from pneumoscan.data.labels import ClassMap
from pneumoscan.data.tasks import TaskSettings, generic_task, layered, read_task_file
from pneumoscan.input_checks.checks import FLAG_ABOVE, InputChecks

HEADLINE_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "macro_f1", "macro_auc")


@dataclass(frozen=True)
class ModelDescription:
    """A trained model's facts (``to_dict``/``from_dict`` give its JSON form)."""

    task: str                                   # what it tells apart, e.g. "no tumour vs tumour on brain MRI"
    classes: tuple[str, ...]                    # class names in output order (two: index 1 is the positive class)
    display: dict[str, str]                     # a reader's words for each class
    modality: str                               # what it screens; anything else is refused
    population: str                             # who it was trained and validated on; others are flagged
    intended_use: str
    limitations: tuple[str, ...]
    arch: str                                   # models.MODELS name, and the builder's arguments
    arch_kwargs: dict
    preprocessing: dict                         # data.preprocess.Preprocessing.to_dict()
    threshold: float                            # two classes: the positive class at or above it; more: argmax
    threshold_rule: str
    class_sources: dict[str, int] = field(default_factory=dict)  # folder or CSV label -> class index
    threshold_on: str = ""                      # what the threshold was chosen on (never test)
    threshold_ci95: tuple[float, float] | None = None  # its bootstrap interval over validation patients
    input_checks: dict | None = None            # the limits its scores are compared with, and what they were fitted on
    metrics: dict = field(default_factory=dict)  # "validation"/"test": metrics at the threshold with 95% intervals
    training: dict = field(default_factory=dict)  # data, weights, stages, recipe, seed
    anatomy: dict | None = None                 # the lung segmenter screening draws the lungs with, and its check
    pneumoscan_version: str = ""

    @property
    def name(self) -> str:
        return f"pneumoscan {self.arch}: {self.task}"

    @property
    def class_map(self) -> ClassMap:
        return ClassMap(tuple(self.classes), dict(self.class_sources))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> ModelDescription:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        interval = values.get("threshold_ci95")
        return cls(**values | {"classes": tuple(values["classes"]), "limitations": tuple(values["limitations"]),
                               "threshold_ci95": tuple(interval) if interval else None})

    def summary_lines(self) -> list[str]:
        """The description for a person, a line per fact (``pneumoscan describe``)."""
        words = class_words(self.classes, self.display)
        rule = (f"{self.threshold:.4f} on P({self.classes[1]}), rule {self.threshold_rule} on "
                f"{self.threshold_on or 'validation'}" if len(self.classes) == 2 else "the most probable class")
        lines = [self.name, f"classes: {words}", f"modality: {self.modality}", f"population: {self.population}",
                 f"intended use: {self.intended_use}", f"decision: {rule}"]
        if self.threshold_ci95:
            lines.append(f"threshold 95% interval over validation patients: "
                         f"[{self.threshold_ci95[0]:.4f}, {self.threshold_ci95[1]:.4f}]")
        lines.append(f"input checks: {checks_sentence(self.input_checks)}")
        if self.anatomy:
            refusing = ("; films without a frontal pair of lungs (lateral views) are refused"
                        if self.anatomy.get("frontal_check") else "")
            lines.append(f"lungs: drawn by {self.anatomy.get('segmenter', 'a lung segmenter')} in every screening, "
                         f"with the share of the heatmap inside them{refusing}")
        seen = {"crop": "the lung field's box, stretched to the input", "mask": "the lung field, the rest grey"}
        if self.arch_kwargs.get("lungs") in seen:
            lines.append(f"the network sees: {seen[self.arch_kwargs['lungs']]} (lungs={self.arch_kwargs['lungs']})")
        for split in ("validation", "test"):
            values = self.metrics.get(split) or {}
            shown = [f"{k} {values[k]['value']:.3f}" for k in HEADLINE_METRICS if isinstance(values.get(k), dict)]
            if shown:
                lines.append(f"{split}: " + ", ".join(shown))
        lines += [f"limitation: {item}" for item in self.limitations]
        return lines


def class_words(classes, display: dict[str, str]) -> str:
    """"no tumour, tumour (glioma or meningioma)": each class with its words where they differ."""
    return ", ".join(f"{name} ({display[name]})" if display.get(name, name) != name else name for name in classes)


def task_words(classes: ClassMap, data: str | Path = "", settings: TaskSettings = TaskSettings()) -> TaskSettings:
    """The task's words with nothing left empty: generic words, then a known dataset's, then the data's
    ``task.json``, then the run's settings (later wins)."""
    return layered(generic_task(classes), known_task(classes), read_task_file(data), settings)


def describe(*, arch: str, arch_kwargs: dict, preprocessing: dict, classes: ClassMap, threshold: float,
             threshold_rule: str, words: TaskSettings, checks: InputChecks | None = None, fitted_on: dict | None = None,
             threshold_on: str = "", threshold_ci95=None, metrics: dict | None = None,
             training: dict | None = None) -> ModelDescription:
    """A model's description from what its run knows (``words``: ``task_words``'s)."""
    from pneumoscan import __version__

    limits = check_limits(checks)
    return ModelDescription(
        task=words.name, classes=tuple(classes.names), display=words.words_for(tuple(classes.names)),
        modality=words.modality, population=words.population, intended_use=words.intended_use,
        limitations=tuple(words.limitations), arch=arch, arch_kwargs=dict(arch_kwargs), preprocessing=preprocessing,
        threshold=float(threshold), threshold_rule=threshold_rule, class_sources=dict(classes.sources),
        threshold_on=threshold_on, threshold_ci95=tuple(threshold_ci95) if threshold_ci95 is not None else None,
        input_checks=None if limits is None else limits | {"fitted_on": fitted_on or {}},
        metrics=metrics or {}, training=training or {}, pneumoscan_version=__version__)


def check_limits(checks: InputChecks | None) -> dict | None:
    """The input checks' limits, which the serving graph's scores are compared with."""
    if checks is None:
        return None
    return {"shift_threshold": FLAG_ABOVE, "novelty_threshold": checks.shift.threshold,
            "novelty_quantile": checks.shift.quantile, "other_population_classifier": checks.shift.weight is not None,
            "population_limit": checks.shift.population_limit,
            "gate_threshold": checks.gate.threshold if checks.gate else None, "shift_layer": checks.shift_layer}


def checks_sentence(limits: dict | None) -> str:
    """What the input checks were fitted on, in one sentence."""
    if not limits:
        return "none: every readable image is scored"
    fitted = limits.get("fitted_on") or {}
    parts = [f"{fitted.get('training_images', '?')} training images"]
    if fitted.get("accept"):
        parts.append(f"{sum(fitted['accept'].values())} images of other populations given to accept "
                     f"({', '.join(map(str, fitted['accept']))})")
    if fitted.get("made"):
        parts.append(f"{sum(fitted['made'].values())} made images that are not of the modality "
                     f"({', '.join(fitted['made'])})")
    if fitted.get("refuse"):
        parts.append(f"{sum(fitted['refuse'].values())} images of other modalities given to refuse "
                     f"({', '.join(map(str, fitted['refuse']))})")
    return "fitted on " + "; ".join(parts)


def metric_summary(split: dict) -> dict | None:
    """A split's metrics at the decision rule, each with its 95% interval (from ``evaluate``'s summary)."""
    at = split.get("at_threshold") or split.get("at_argmax")
    if not at:
        return None
    intervals = at.get("ci95", {})
    values = {k: {"value": v, "ci95": intervals.get(k)} for k, v in at.items()
              if isinstance(v, int | float) and not isinstance(v, bool) and k != "n"}
    return values | {"n": at.get("n"), "confusion_matrix": at.get("confusion_matrix")}
