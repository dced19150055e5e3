"""What ``pneumoscan tune`` writes besides its summary: the trials table and Optuna's plots."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import optuna

log = logging.getLogger(__name__)


def write_trials_table(study: optuna.Study, path: Path) -> None:
    """One CSV row per trial: number, state, value, seconds and every parameter (no pandas needed)."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for trial in trials for name in trial.params})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", "seconds", *params])
        for trial in trials:
            seconds = trial.duration.total_seconds() if trial.duration else ""
            writer.writerow([trial.number, trial.state.name, "" if trial.value is None else trial.value, seconds,
                             *(trial.params.get(name, "") for name in params)])


def write_plots(study: optuna.Study, out: Path) -> None:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    def save(axes, name: str) -> None:  # optuna draws with pyplot: save its figure, then let it go
        figure = axes.figure
        figure.set_size_inches(8, 4.5)
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)

    save(optuna_plots.plot_optimization_history(study), "optimization_history.png")
    if len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) >= 2:
        try:
            save(optuna_plots.plot_param_importances(study), "param_importances.png")
        except (ValueError, RuntimeError) as err:  # importances need varied, completed trials
            log.warning("no parameter-importance plot: %s", err)
            plt.close("all")
