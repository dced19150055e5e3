"""Run records: what a comparison keeps of each finished run (its settings, test metrics and predictions,
commit and machine), so that a comparison of hours on a 2-core CPU can span sessions and machines: a run
with a record under the same settings is not trained again.

``RunRecords(folder, provenance)`` runs a comparison's runs (``bench.compare``, ``bench.brain_mri_compare``). A record
marked by hand ``"train_seconds_comparable": false`` (its ``"train_seconds_note"`` says why) reports no
training time; a run resumed after a kill reports the time of all its invocations (``bench.timing``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.timing import training_seconds
from pneumoscan.evaluate.report import write_json
from pneumoscan.settings import to_dict
from pneumoscan.train import TrainConfig

log = logging.getLogger(__name__)

# not part of what defines a run: where its files live, and how its arithmetic is done (the precision asked for is
# not the one used where a CPU lacks native bf16; the precision used is recorded per run, like its device; nor
# which engine computed the cached activations)
NOT_PROTOCOL = ("data", "out", "cache_dir", "split", "precision", "cache_engine")
ARRAYS = ("y", "prob", "called")


def protocol_settings(config: TrainConfig | dict) -> dict:
    """The settings that define a run, without where its files live (weights files are named, not located)."""
    settings = to_dict(config) if isinstance(config, TrainConfig) else current_layout(config)
    settings = {k: v for k, v in settings.items() if k not in NOT_PROTOCOL}
    if settings["weights"] not in ("auto", "imagenet", "none"):
        settings["weights"] = Path(settings["weights"]).name
    return settings


FLAT_STAGE = re.compile(r"(head|tail|full)_(epochs|lr_min|lr|fraction)$")


def current_layout(settings: dict) -> dict:
    """A record's settings as today's TrainConfig lays them out: records written before the stage settings were
    nested (``tail_epochs`` -> ``tail.epochs``) and before the task's words left the input-check settings
    (``input_checks.modality`` -> ``task.modality``) describe the same runs."""
    settings = dict(settings)
    for key in [k for k in settings if FLAT_STAGE.match(k)]:
        stage, name = FLAT_STAGE.match(key).groups()
        settings[stage] = {**settings.get(stage, {}), name: settings.pop(key)}
    checks = dict(settings.get("input_checks") or {})
    words = {k: checks.pop(k) for k in ("modality", "population") if k in checks}
    if "input_checks" in settings:
        settings["input_checks"] = checks
    if "task" not in settings and "input_checks" in settings:
        default_words = {"modality": "chest X-ray", "population": ""}  # what every such run was given
        task = to_dict(TrainConfig())["task"]
        task.update({k: v for k, v in words.items() if v != default_words[k]})
        settings["task"] = task
    return settings


def read_record(path: Path, config: TrainConfig) -> dict | None:
    """The record of an earlier run of ``config``, or None when there is none or it ran under other settings."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if protocol_settings(record.get("settings", {"weights": ""})) != protocol_settings(config):
        log.warning("%s was made under other settings: training %s again", path, config.out)
        return None
    log.info("reusing the record %s (%s)", path, record.get("provenance", ""))
    if not record.get("train_seconds_comparable", True):
        record["train_seconds"] = None
    return {**record, "finished_earlier": True, "wall_seconds": 0.0,
            **{k: np.asarray(record[k]) for k in ARRAYS if k in record}}


def write_record(path: Path, config: TrainConfig, summary: dict, provenance: str) -> None:
    """Keep what the comparison needs from a finished run, small enough to keep with the results."""
    record = {**summary, "settings": protocol_settings(config), "provenance": provenance,
              "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **{k: np.asarray(summary[k]).tolist() for k in ARRAYS if k in summary}}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


@dataclass
class RunRecords:
    """The records in ``folder``: a run with one is reused, a run without one is trained and recorded."""

    folder: Path
    provenance: str

    def recorded(self, name: str, settings: TrainConfig) -> dict | None:
        """The record ``name`` made under ``settings``, or None when there is none."""
        return read_record(self._path(name), settings)

    def __call__(self, name: str, settings: TrainConfig, make: Callable[[], dict]) -> dict:
        path = self._path(name)
        record = read_record(path, settings)
        if record is None:
            record = make()
            if record.get("resumed") and Path(settings.out, "train.log").exists():
                record["train_seconds"] = training_seconds(Path(settings.out))
            write_record(path, settings, record, self.provenance)
        return record

    def _path(self, name: str) -> Path:
        return Path(self.folder) / f"{name}.json"

    def not_comparable(self) -> dict[str, str]:
        """The records whose training time was marked by hand as not comparable, and why."""
        notes = {}
        for path in sorted(Path(self.folder).glob("*.json")):
            record = json.loads(path.read_text())
            if not record.get("train_seconds_comparable", True):
                notes[path.stem] = record.get("train_seconds_note", "")
        return notes
