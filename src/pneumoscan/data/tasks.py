"""The words of a task: what a model screens (its modality), who it was trained on (its population), what
its classes mean to a reader, its intended use and its limits.

They come, later winning, from generic words, the defaults of a dataset pneumoscan knows (``data.known``,
recognised by its class folders), a ``task.json`` beside the data, and the run's ``task.*`` settings
(``--set task.modality="brain MRI"``). ``model_description.describe`` puts them into the model's description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pneumoscan.data.labels import ClassMap

TASK_FILE = "task.json"


@dataclass(frozen=True)
class TaskSettings:
    """How a run names its task ("" or () = from ``task.json``, the data's known defaults, or generic words)."""

    name: str = ""                     # what the model tells apart, e.g. "tumour vs no tumour on brain MRI"
    modality: str = ""                 # what it screens: a refusal says "this does not look like a <modality>"
    population: str = ""               # who the training images are: a flag says "unlike <population>"
    intended_use: str = ""             # who may use it for what
    display: tuple[str, ...] = ()      # a reader's words for the classes, "CLASS=words" (e.g. "notumor=no tumour")
    limitations: tuple[str, ...] = ()  # what a user must know before trusting it

    def words_for(self, classes: tuple[str, ...]) -> dict[str, str]:
        """Every class's display words (its own name where none are given)."""
        given = dict(item.split("=", 1) for item in self.display if "=" in item)
        return {name: given.get(name, name) for name in classes}


GENERIC_LIMITATIONS = (
    "Trained and validated on one dataset: performance on other hospitals, devices and populations is unknown; "
    "check it and its threshold on local data before any use.",
    "Heatmaps show where the model's evidence lies, not a finding's extent; they can highlight markers, text or "
    "borders.",
)


def generic_task(classes: ClassMap) -> TaskSettings:
    """Words that claim nothing the data does not say."""
    return TaskSettings(name=" vs ".join(classes.names), modality="image of the kind the model was trained on",
                        population="the training images",
                        intended_use="Research and education: decision support with a heatmap of the evidence. Not "
                                     "a medical device; a specialist must read every image.",
                        limitations=GENERIC_LIMITATIONS)


def read_task_file(data: str | Path) -> TaskSettings:
    """The ``task.json`` beside a dataset root (or a label CSV), if there is one; a ``display`` object of
    class to words is accepted as well as a list of "CLASS=words"."""
    data = Path(data) if data else None
    if data is None:
        return TaskSettings()
    path = (data if data.is_dir() else data.parent) / TASK_FILE
    if not path.is_file():
        return TaskSettings()
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    known = {f.name for f in fields(TaskSettings)}
    if not isinstance(values, dict) or set(values) - known:
        raise ValueError(f"{path}: expected an object with some of the keys {sorted(known)}")
    if isinstance(values.get("display"), dict):
        values["display"] = [f"{k}={v}" for k, v in values["display"].items()]
    return TaskSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def with_article(words: str) -> str:
    """"a chest X-ray", "an image of ...": the modality as a refusal names it."""
    return f"{'an' if words[:1].lower() in 'aeiou' else 'a'} {words}"


def layered(*layers: TaskSettings | None) -> TaskSettings:
    """The layers' words, a later layer's non-empty words winning."""
    words = TaskSettings()
    for layer in layers:
        if layer is not None:
            words = replace(words, **{f.name: getattr(layer, f.name) for f in fields(TaskSettings)
                                      if getattr(layer, f.name)})
    return words
