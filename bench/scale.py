"""Scale-out benchmark: torchrun/DDP, Ray Data scoring and a PostgreSQL-backed Optuna study.

    python -m bench.scale [--parts ddp ray postgres]

- ddp: DenseNet121 (head and tail stages on cached activations) on 1,200 Kermany training images, 1 process
  and 2 gloo processes under torchrun with the same seed and global batch; then the 2-process run killed
  (SIGKILL to the whole process group) during its tail stage and resumed with --resume.
- ray: the exported Kermany model (bench/work/qc/export/model.onnx, made by bench.qc, or else the ddp part's
  1-process run, exported) screens 2,000 files
  (Kermany images and 3 broken files) with ``pneumoscan predict`` locally and with ``--engine ray`` on a
  local 2-actor Ray instance; the CSVs are compared row by row, and the throughputs.
- postgres: a throwaway PostgreSQL server; ``pneumoscan tune --storage postgresql://...`` with 2 worker
  processes runs a 20-trial study on phantoms; trial numbers and settings are checked for duplicates,
  and the best settings are loaded by ``train --config``.
Writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from bench.common import DATA, ROOT, WEIGHTS, launch_commit, write_result
from pneumoscan.data.records import scan_kaggle_split
from pneumoscan.data.split import evenly_spaced

WORK = ROOT / "bench" / "work" / "scale"
DDP_SETTINGS = ["--model", "densenet121", "--weights", str(WEIGHTS["densenet121"]), "--recipe", "densenet121-tuned",
                "--set", "train_views=2", "head.epochs=6", "tail.epochs=3", "patience=6", "shift_report=false",
                "threshold_on=val", "test_split=", "val_fraction=0.2", "workers=1", "input_checks.made_per_kind=20",
                "input_checks.exposure_examples=50", "input_checks.resampled_examples=50"]


def kermany_csv(count: int) -> Path:
    chest = scan_kaggle_split(DATA, "train")
    path = WORK / f"kermany_train_{count}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([[chest[i].path, chest[i].label] for i in evenly_spaced(len(chest), count)])
    return path


def train_command(processes: int, data: Path, out: Path, *extra: str) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                 "--master-port", "29611"] if processes > 1 else [sys.executable])
    return launcher + ["-m", "pneumoscan.cli", "-q", "train", "--data", str(data), "--out", str(out), *DDP_SETTINGS,
                       f"cache_dir={WORK / 'cache'}", *extra]


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return round(time.perf_counter() - started, 1)


def kill_during_tail(command: list[str], state: Path) -> None:
    """Start a run and SIGKILL its whole process group once its tail stage has saved an epoch."""
    process = subprocess.Popen(command, start_new_session=True)
    while process.poll() is None:
        if state.exists():
            try:
                saved = torch.load(state, map_location="cpu", weights_only=True)
            except (RuntimeError, EOFError, OSError):
                saved = {}
            if saved.get("stage") == "tail":
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
        time.sleep(0.5)
    raise RuntimeError("the run finished before it could be killed")


def final_weights(run: Path) -> dict:
    from pneumoscan.models.checkpoint import load_model

    return load_model(run).model.state_dict()


def ddp_part() -> dict:
    data = kermany_csv(1200)
    folders = {name: WORK / f"ddp_{name}" for name in ("one", "two", "killed")}
    for folder in folders.values():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    seconds = {"one": run(train_command(1, data, folders["one"])), "two": run(train_command(2, data, folders["two"]))}
    kill_during_tail(train_command(2, data, folders["killed"]), folders["killed"] / "train_state.pt")
    seconds["resumed"] = run(train_command(2, data, folders["killed"], "--resume"))
    metrics = {n: json.loads((f / "metrics.json").read_text()) for n, f in folders.items()}
    auc = {n: m["validation"]["at_threshold"]["auc"] for n, m in metrics.items()}
    two, resumed = final_weights(folders["two"]), final_weights(folders["killed"])
    largest = max(float((two[k].float() - resumed[k].float()).abs().max()) for k in two)
    return {"processes": 2, "backend": "gloo", "data": f"{data.relative_to(ROOT)} (1,200 Kermany training images; "
                                                        "validation 20% of their patients)",
            "val_auc_one_process": auc["one"], "val_auc_two_processes": auc["two"],
            "val_auc_delta": abs(auc["one"] - auc["two"]), "val_auc_resumed": auc["killed"],
            "resumed_equal": auc["killed"] == auc["two"] and largest <= 1e-6,
            "resumed_largest_weight_difference": largest, "seconds": seconds}


def screen_csv(model: Path, inputs: Path, out: Path, *extra: str) -> float:
    command = [sys.executable, "-m", "pneumoscan.cli", "-q", "predict", str(model), str(inputs), "--out", str(out),
               *extra]
    started = time.perf_counter()
    subprocess.run(command, check=False)  # exit code 1: some files were unreadable, as planted
    return time.perf_counter() - started


def same_screening(a: dict, b: dict, tolerance: float = 1e-5) -> bool:
    """Two CSV rows of the same file: same outcome and label, scores within float tolerance (Ray's actors run
    one thread each, so sums are added in another order)."""
    if (a["path"], a["status"], a["label"], a["reason"]) != (b["path"], b["status"], b["label"], b["reason"]):
        return False
    scores = ("probability", "shift_score", "modality_probability")
    return all(a[k] == b[k] == "" or abs(float(a[k]) - float(b[k])) <= tolerance for k in scores)


def exported_model() -> Path:
    """bench.qc's export of the tuned Kermany run, or else the DDP part's 1-process DenseNet121 exported here:
    the same graph, so the same scoring cost (the weights differ, which the record says)."""
    tuned = ROOT / "bench" / "work" / "qc" / "export" / "model.onnx"
    if tuned.exists():
        return tuned
    run, out = WORK / "ddp_one", WORK / "ddp_one_export"
    if not (run / "metrics.json").exists():
        raise FileNotFoundError(f"{tuned}: run python -m bench.qc first, or the ddp part (its run is exported)")
    if not (out / "model.onnx").exists():
        from pneumoscan.export.files import export_run

        export_run(run, out)
    return out / "model.onnx"


def ray_part(images: int = 2000) -> dict:
    model = exported_model()
    samples = scan_kaggle_split(DATA, "train") + scan_kaggle_split(DATA, "test")
    listing = WORK / "ray_inputs.csv"
    broken = [WORK / f"broken_{i}.jpeg" for i in range(3)]
    for i, path in enumerate(broken):
        path.write_bytes(b"\xff\xd8 truncated" * (i + 1))
    paths = [samples[i].path for i in evenly_spaced(len(samples), images - len(broken))] + [str(p) for p in broken]
    with listing.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path"], *[[p] for p in paths]])
    local_seconds = screen_csv(model, listing, WORK / "local.csv")
    ray_seconds = screen_csv(model, listing, WORK / "ray.csv", "--engine", "ray", "--actors", "2")
    local, ray = (list(csv.DictReader((WORK / name).open())) for name in ("local.csv", "ray.csv"))
    mismatches = sum(not same_screening(a, b) for a, b in zip(local, ray)) + abs(len(local) - len(ray))
    largest = max((abs(float(a["probability"]) - float(b["probability"])) for a, b in zip(local, ray)
                   if a["probability"] and b["probability"]), default=0.0)
    return {"model": str(model.relative_to(ROOT)), "images": len(paths), "actors": 2, "mismatches": mismatches,
            "probability_max_abs_diff": largest,
            "unreadable_reported": sum(r["status"] == "unreadable" for r in ray),
            "local_seconds": round(local_seconds, 1), "ray_seconds": round(ray_seconds, 1),
            "throughput_ratio": round(local_seconds / ray_seconds, 3),
            "note": "both timings are whole `pneumoscan predict` invocations (start-up included); Ray's includes "
                    "starting the local instance and its two actors",
            "to_go_to_n_nodes": "ray start --head on one node and ray start --address HEAD:6379 on the others, the "
                                "model and images readable at the same paths on every node, then --engine ray "
                                "--address HEAD:6379 --actors N"}


def postgres_part(trials: int = 20) -> dict:
    from tests.postgres import start_server

    from pneumoscan.data.synthetic import write_synthetic_dataset
    from pneumoscan.settings import load_settings
    from pneumoscan.studies.tune import TuneConfig, open_study
    from pneumoscan.train import TrainConfig

    url, stop = start_server()
    try:
        data = write_synthetic_dataset(WORK / "phantoms", n_train=160, n_test=20, size=64, seed=3)
        base = WORK / "tiny.json"
        base.write_text(json.dumps({"image_size": 64, "train_views": 2, "batch_size": 16, "workers": 0, "n_boot": 30,
                                    "val_fraction": 0.25, "shift_report": False}))
        out = WORK / "study"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pneumoscan.cli", "-q", "tune", "--data", str(data), "--out", str(out),
                        "--weights", "none", "--trials", str(trials), "--workers", "2", "--storage", url,
                        "--config", str(base), "--set", "head_epochs=3", "tail_epochs=1", "objective=val_auc",
                        f"cache_dir={WORK / 'tune_cache'}"], check=True)
        seconds = time.perf_counter() - started
        study = open_study(TuneConfig(out=str(out), storage=url))
        every = study.get_trials(deepcopy=False)
        numbers = [t.number for t in every]
        finished = [t for t in every if t.state.name in ("COMPLETE", "PRUNED")]
        draws = [json.dumps(t.params, sort_keys=True) for t in finished]
        best = load_settings(TrainConfig, file=str(out / "best_config.json"))
        return {"workers": 2, "trials": len(finished), "trials_asked": trials, "trial_numbers_unique":
                len(numbers) == len(set(numbers)) == max(numbers) + 1, "duplicate_trials": len(draws) - len(set(draws)),
                "states": {s: sum(t.state.name == s for t in every) for s in {t.state.name for t in every}},
                "trials_per_worker": sorted(Counter(t.user_attrs.get("worker") for t in finished).values()),
                "best_value": study.best_value, "best_config_loads": best.head.lr == study.best_params["head_lr"],
                "seconds": round(seconds, 1), "storage": "PostgreSQL " + server_version(url)}
    finally:
        stop()


def server_version(url: str) -> str:
    import sqlalchemy

    with sqlalchemy.create_engine(url).connect() as connection:
        return connection.execute(sqlalchemy.text("show server_version")).scalar()


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["ddp", "ray", "postgres"], choices=["ddp", "ray", "postgres"])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parts = {"ddp": ddp_part, "ray": ray_part, "postgres": postgres_part}
    previous = json.loads((ROOT / "bench" / "results" / "scale.json").read_text()) \
        if (ROOT / "bench" / "results" / "scale.json").exists() else {}
    result = {k: {"commit": previous.get("commit"), **v} for k, v in previous.items() if k in parts}  # kept parts
    for name in args.parts:
        result[name] = {"commit": launch_commit(), **parts[name]()}
        print(name, json.dumps(result[name])[:400], flush=True)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_result("scale", result)


if __name__ == "__main__":
    main()
