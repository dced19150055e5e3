"""Where a training run is: one log line per step of the run ("stage 2/4: tail") with an ETA for the whole run.

The ETA comes from a rough cost model, counted in frozen-trunk views cached (the unit): an epoch's step on a
cached view costs a fraction of one, an image screened for validation or test about two, an image made or
copied for the input checks more (it is also resampled or re-encoded), a training step on an image through every
layer several. The ratios were read off DenseNet121 runs of the quick and the full recipe on 2 cores (their
train.log). The seconds each finished step took, over its cost, calibrate the rest, so cached work left by an
earlier run, a faster machine or a smaller model all shorten the estimate as the run goes.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field

from pneumoscan.data.shifts import SHIFTS
from pneumoscan.input_checks.checks import RESAMPLINGS, InputCheckSettings
from pneumoscan.input_checks.not_xray import KINDS

log = logging.getLogger(__name__)

HEAD_COST = 0.002  # an epoch's step on one pooled feature vector through the head
TAIL_COST = 0.05  # an epoch's step on one cached view through the tail (forward and backward)
FULL_COST = 4.5  # an epoch's step on one image through every layer
SCREEN_COST = 1.8  # an image read, passed through the whole network and checked (validation, shifts, test)
CHECK_COST = 2.5  # an image made, varied, resampled or re-encoded, and passed for the input checks


@dataclass(frozen=True)
class Step:
    """One step of a run and its rough cost, in cached trunk views."""

    name: str
    cost: float


@dataclass(frozen=True)
class RunSize:
    """How many images each part of a run reads."""

    pool: int  # train + validation images (what the trunk's caches hold)
    train: int
    val: int
    test: int


def run_steps(stages: tuple[str, ...], config, size: RunSize) -> list[Step]:
    """The steps of a run with ``config``'s settings (``train.TrainConfig``) on data of ``size``."""
    steps, cached = [], False
    for stage in stages:
        if stage == "full":
            steps.append(Step(stage, config.full.epochs * (FULL_COST * size.train + SCREEN_COST * size.val)))
            continue
        views = config.train_views
        caching = 0.0 if cached else size.pool * config.cached_views_per_image()
        cached = True
        per_view = TAIL_COST if stage == "tail" else HEAD_COST
        epochs = config.stage(stage).epochs
        steps.append(Step(stage, caching + epochs * size.train * views * per_view + epochs * size.val * per_view))
    steps.append(Step("input checks", CHECK_COST * input_check_images(config.input_checks)))
    shifted = min(config.shift_images or size.val, size.val) * len(SHIFTS) if (
        config.shift_report or config.threshold_on == "val+shifts") else 0
    steps.append(Step("threshold and test", SCREEN_COST * (size.val + shifted + size.test)))
    return steps


def input_check_images(settings: InputCheckSettings) -> float:
    """Images through the network to fit the input checks (``check_fitting.fit_input_checks``)."""
    examples = settings.examples_per_source * (len(settings.accept) + len(settings.refuse))
    copies = (len(RESAMPLINGS) + 1) * settings.resampled_examples * (1.5 if settings.accept else 1.0)
    return 3 * settings.exposure_examples + settings.made_per_kind * len(KINDS) + copies + examples


@dataclass
class RunProgress:
    """Logs each step as it starts, with the whole run's estimated time left, and records how long it took."""

    steps: list[Step]
    started: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)
    _current: tuple[str, float] | None = None

    def begin(self, name: str, *, done_before: bool = False) -> None:
        index = [s.name for s in self.steps].index(name)
        if done_before:
            log.info("stage %d/%d: %s (done before the resume)", index + 1, len(self.steps), name)
            self.seconds[name] = 0.0
            return
        log.info("stage %d/%d: %s%s", index + 1, len(self.steps), name, self._eta(index))
        self._current = (name, time.perf_counter())

    def end(self) -> float:
        """Close the current step; returns its seconds."""
        name, began = self._current
        self.seconds[name] = time.perf_counter() - began
        self._current = None
        return self.seconds[name]

    def _eta(self, index: int) -> str:
        done = [s for s in self.steps[:index] if self.seconds.get(s.name)]
        cost_done = sum(s.cost for s in done)
        if not done or cost_done <= 0:
            return " (the whole run's ETA follows this step)" if index == 0 else ""
        rate = sum(self.seconds[s.name] for s in done) / cost_done
        left = rate * sum(s.cost for s in self.steps[index:])
        finish = datetime.datetime.now() + datetime.timedelta(seconds=left)
        return f"; about {format_duration(left)} left in the run (ETA {finish:%H:%M})"


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1 h 05 min"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
