"""One decision everywhere: every entry point gives the same outcome, label and heatmap for every file.

    python -m bench.agreement

Two trained runs of the quick recipe (two classes: Kermany NORMAL vs PNEUMONIA; three classes: brain MRI no
tumour / glioma / other tumour), each served three ways (the run folder in PyTorch, its ONNX export in
onnxruntime, the same file in OpenVINO), screen a hostile folder (every format, broken files, non-images:
``tests.hostile``) and real test images of both kinds, through the CLI's ``predict``, the Python ``screen``, the
server's ``POST /v1/predict?heatmap=true``, the CLI's ``evaluate`` and (run folder) the CLI's ``explain``. Counted:
files whose status or label differ between entry points (``mismatches``), heatmaps whose explained class differs
(``explained_class_mismatches``), and the largest difference between a served heatmap and the Grad-CAM that
``explain`` draws for the same class (``heatmap.max_abs_diff``: PyTorch; ``max_abs_diff_across_runtimes``:
onnxruntime and OpenVINO against it). Writes ``bench/results/agreement.json``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from tests.hostile import write_hostile_folder

from bench.common import SHARED, WEIGHTS, launch_commit, write_result
from pneumoscan.cli import main as cli
from pneumoscan.data.records import expand_inputs
from pneumoscan.export.files import export_run
from pneumoscan.inference.screen import SCORED, load
from pneumoscan.serve import create_app
from pneumoscan.serve.app import heatmap_rgba

WORK = Path(__file__).resolve().parents[1] / "bench" / "work" / "agreement"
TASKS = {
    "two_classes": {"data": SHARED / "data" / "chest_xray_224", "test": "test", "set": []},
    "three_classes": {"data": SHARED / "data" / "brain_tumor_mri", "test": "Testing", "set": [
        "train_split=Training", "test_split=Testing", "group_by=duplicates",
        "classes=notumor=no tumour,glioma=glioma,meningioma=other tumour,pituitary=other tumour"]},
}
REAL_PER_CLASS_FOLDER = 20  # real test images from each class folder: Kermany 2 folders (40), brain MRI 4 (80)
FORMS = (("run folder", "pytorch"), ("onnx", "onnxruntime"), ("onnx", "openvino"))


def trained_run(task: str) -> Path:
    """The task's quick-recipe run, trained here unless a finished one is there."""
    run = WORK / task / "run"
    if not (run / "model.pt").exists():
        shutil.rmtree(run, ignore_errors=True)
        spec = TASKS[task]
        code = cli(["train", "--recipe", "quick", "--data", str(spec["data"]), "--out", str(run), "--weights",
                    str(WEIGHTS["densenet121"]), "--set", f"cache_dir={WORK / 'cache'}", *spec["set"]])
        if code:
            raise SystemExit(f"training {task} failed")
    return run


def files_of(task: str) -> tuple[list[str], dict[str, str]]:
    """The hostile folder (made from one real test image) and real test images: paths, and each one's class
    folder ("" for a hostile file)."""
    spec = TASKS[task]
    classes = sorted(p for p in (spec["data"] / spec["test"]).iterdir() if p.is_dir())
    real = [image for folder in classes for image in sorted(folder.iterdir())[:REAL_PER_CLASS_FOLDER]]
    hostile = WORK / task / "hostile"
    shutil.rmtree(hostile, ignore_errors=True)
    write_hostile_folder(hostile, real[0])
    paths = expand_inputs([hostile]) + [str(p) for p in real]
    return paths, {str(p): p.parent.name for p in real}


def cli_predict(model: Path, runtime: str, paths: list[str], out: Path) -> dict[str, tuple[str, str]]:
    with contextlib.redirect_stdout(io.StringIO()):
        cli(["predict", str(model), *paths, "--out", str(out), "--runtime", runtime])
    return {row["path"]: (row["status"], row["label"]) for row in csv.DictReader(out.open())}


def cli_evaluate(model: Path, runtime: str, paths: list[str], labels: dict[str, str], out: Path) -> dict[str, tuple]:
    """``pneumoscan evaluate`` on a label CSV of every file (hostile ones labelled with the first class): the label
    of each scored file from its predictions CSV, the status of the others from its metrics."""
    listing = out / "labels.csv"
    out.mkdir(parents=True, exist_ok=True)
    first = sorted(set(labels.values()))[0]
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([p, labels.get(p, first)] for p in paths)
    with contextlib.redirect_stdout(io.StringIO()):
        cli(["evaluate", str(model), "--data", str(listing), "--runtime", runtime, "--out", str(out)])
    rows = csv.DictReader((out / "predictions_labels.csv").open())
    scored = {row["path"]: (SCORED, row["predicted"]) for row in rows}
    metrics = json.loads((out / "metrics_labels.json").read_text())
    others = {path: (reason.split(":")[0], "") for path, reason in metrics["not_scored"].items()}
    return {**scored, **others}


def cli_explain(run: Path, paths: list[str], out: Path) -> dict[str, tuple[str, str, str, np.ndarray | None]]:
    """``pneumoscan explain --save-arrays``: (status, label, explained class, map) per file."""
    with contextlib.redirect_stdout(io.StringIO()):
        cli(["explain", *paths, "--model", str(run), "--out", str(out), "--save-arrays"])
    rows = {}
    for row in csv.DictReader((out / "explanations.csv").open()):
        if row["error"]:
            rows[row["path"]] = (row["error"].split(":")[0], "", "", None)
        else:
            heatmap = np.load(out / row["panel"].replace(".png", ".npy"))
            rows[row["path"]] = (SCORED, row["label"], row["explained"], heatmap)
    return rows


def served(model: Path, runtime: str, paths: list[str]) -> dict[str, tuple[str, str, str, np.ndarray | None]]:
    """``POST /v1/predict?heatmap=true`` per file: (status, label, explained class, heatmap PNG as RGBA)."""
    client = TestClient(create_app(model, runtime_name=runtime))
    rows = {}
    for path in paths:
        upload = {"file": (Path(path).name, Path(path).read_bytes(), "application/octet-stream")}
        body = client.post("/v1/predict", params={"heatmap": "true"}, files=upload).json()
        png = body.get("heatmap_png")
        rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1])))) if png else None
        rows[path] = (body["status"], body.get("label", ""), body.get("explained", ""), rgba)
    return rows


def compare_task(task: str) -> dict:
    run = trained_run(task)
    onnx_dir = WORK / task / "export"
    export_run(run, onnx_dir)
    paths, folders = files_of(task)
    classes = json.loads((run / "classes.json").read_text())  # class folder -> index of the run's class
    labels = {path: classes["names"][classes["sources"][folder]] for path, folder in folders.items()}
    explained = cli_explain(run, paths, WORK / task / "explain")
    report = {"files": len(paths), "hostile_files": len(paths) - len(folders), "real_images": len(folders),
              "classes": list(load(run).classes), "forms": {}}
    for form, runtime in FORMS:
        model = run if form == "run folder" else onnx_dir / "model.onnx"
        name = f"{form} ({runtime})"
        screener = load(model, runtime=runtime)
        python = {r.source: r for r in screener.screen(paths, heatmaps=True, progress=False)}
        server = served(model, runtime, paths)
        entry_points = {
            "python": {p: (r.status, r.label) for p, r in python.items()},
            "cli_predict": cli_predict(model, runtime, paths, WORK / task / f"{runtime}.csv"),
            "server": {p: s[:2] for p, s in server.items()},
            "cli_evaluate": cli_evaluate(model, runtime, paths, labels, WORK / task / f"evaluate_{runtime}"),
            "cli_explain": {p: e[:2] for p, e in explained.items()},
        }
        mismatched = [p for p in paths if len({answers[p] for answers in entry_points.values()}) > 1]
        scored = [p for p in paths if python[p].scored]
        classes_differ = [p for p in scored if len({python[p].explained, server[p][2], explained[p][2]}) > 1]
        map_diff = max((float(np.abs(python[p].heatmap - explained[p][3]).max()) for p in scored), default=0.0)
        png_diff = max((int(np.abs(server[p][3].astype(int) - heatmap_rgba(python[p].heatmap).astype(int)).max())
                        for p in scored), default=0)
        report["forms"][name] = {"mismatches": len(mismatched), "mismatched_files": mismatched[:10],
                                 "explained_class_mismatches": len(classes_differ), "scored": len(scored),
                                 "statuses": {s: sum(python[p].status == s for p in paths)
                                              for s in sorted({r.status for r in python.values()})},
                                 "heatmap_max_abs_diff_vs_explain": map_diff,
                                 "served_png_max_abs_diff_levels": png_diff}
    return report


def main() -> None:
    launch_commit()
    started = time.perf_counter()
    tasks = {task: compare_task(task) for task in TASKS}
    forms = [form for report in tasks.values() for form in report["forms"].items()]
    pytorch = [f for name, f in forms if "pytorch" in name]
    others = [f for name, f in forms if "pytorch" not in name]
    result = {
        "data": {task: str(spec["data"].relative_to(SHARED.parent)) for task, spec in TASKS.items()},
        "files": sum(report["files"] for report in tasks.values()),
        "mismatches": sum(f["mismatches"] for _, f in forms),
        "explained_class_mismatches": sum(f["explained_class_mismatches"] for _, f in forms),
        "heatmap": {"max_abs_diff": max(f["heatmap_max_abs_diff_vs_explain"] for f in pytorch),
                    "max_abs_diff_across_runtimes": max(f["heatmap_max_abs_diff_vs_explain"] for f in others),
                    "served_png_max_abs_diff_levels": max(f["served_png_max_abs_diff_levels"] for _, f in forms)},
        "tasks": tasks,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_result("agreement", result)


if __name__ == "__main__":
    main()
