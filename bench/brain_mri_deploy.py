"""Brain MRI, the deployable end: a trained 4-class run exported, screened and served.

    python -m bench.brain_mri_deploy [--run bench/work/brain_mri/densenet121_4class_seed1]

1. Exports the run to ONNX (``pneumoscan export``'s function, with its parity check on 64 Testing slices).
2. Screens every Testing slice with the run folder (PyTorch, fp32 and bf16) and with the ONNX file
   (onnxruntime), through the one ``Screener``: accuracy and macro-F1 of each, how many labels differ, the
   largest difference of any class probability, milliseconds per slice.
3. Agreement: a folder of Testing slices (each class), chest X-rays and a hostile folder, screened by the
   CLI, the Python API and the web API, for the run and its export (``bench.qc.agreement``); the web API's
   answer carries every class probability.
4. The MRI model's own input check on chest X-rays, through the export: the Kermany test split.

Writes ``bench/results/brain_mri_deploy.json``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from tests.hostile import write_hostile_folder

from bench.brain_mri import MRI, WORK
from bench.common import DATA, ROOT, launch_commit, write_result
from bench.qc import agreement
from pneumoscan.data.records import class_folders, scan_kaggle_split
from pneumoscan.data.split import evenly_spaced
from pneumoscan.evaluate.multiclass import multiclass_metrics
from pneumoscan.evaluate.report import screening_counts
from pneumoscan.export.files import export_run
from pneumoscan.inference.screen import load

DEPLOY = WORK / "deploy"


def screened_metrics(screenings, labels: np.ndarray, names: tuple[str, ...]) -> tuple[dict, np.ndarray]:
    """Multi-class metrics of the scored slices, and the [N, K] probabilities (NaN where not scored)."""
    prob = np.array([[s.probabilities.get(n, np.nan) for n in names] for s in screenings])
    scored = ~np.isnan(prob).any(axis=1)
    metrics = multiclass_metrics(labels[scored], prob[scored], names)
    keep = ("accuracy", "macro_f1", "balanced_accuracy", "macro_auc")
    return {**{k: metrics[k] for k in keep}, **screening_counts(screenings)}, prob


def screen_all(run: Path, onnx: Path, paths: list[str], labels: np.ndarray, names: list[str]) -> dict:
    """Every Testing slice through PyTorch in fp32 and in bf16 (the precision the run trained and was
    tested in on an AMX CPU) and through onnxruntime (fp32): metrics of each and how far fp32 PyTorch and
    ONNX differ."""
    report, probs = {}, {}
    for name, model, precision in (("pytorch_fp32", run, "fp32"), ("pytorch_bf16", run, "bf16"),
                                   ("onnx", onnx, "fp32")):
        screener = load(model, precision=precision)
        if list(screener.classes) != names:
            raise SystemExit(f"{model}: classes {screener.classes}, but the Testing folders are {names}")
        started = time.perf_counter()
        screenings = screener.screen(paths, desc=f"Testing slices, {name}")
        seconds = time.perf_counter() - started
        report[name], probs[name] = screened_metrics(screenings, labels, tuple(names))
        report[name].update(runtime=screener.runtime, precision=screener.precision,
                            ms_per_image=round(1000 * seconds / len(paths), 2))
    fp32, exported = probs["pytorch_fp32"], probs["onnx"]
    both = ~np.isnan(fp32).any(1) & ~np.isnan(exported).any(1)
    report["onnx_labels_differ_from_pytorch_fp32"] = int((fp32[both].argmax(1) != exported[both].argmax(1)).sum())
    report["onnx_prob_max_abs_diff"] = float(np.abs(fp32[both] - exported[both]).max())
    report["bf16_labels_differ_from_fp32"] = int((fp32.argmax(1) != probs["pytorch_bf16"].argmax(1)).sum())
    return report


def web_answer(model: Path, path: str) -> dict:
    """What ``POST /v1/predict`` answers for one slice: its label and every class probability."""
    from fastapi.testclient import TestClient

    from pneumoscan.serve import create_app

    upload = (Path(path).name, Path(path).read_bytes(), "image/jpeg")
    body = TestClient(create_app(model)).post("/v1/predict", files={"file": upload}).json()
    return {"file": Path(path).name, "status": body["status"], "label": body.get("label"),
            "probabilities": body.get("probabilities")}


def agreement_folder(samples, names: list[str]) -> Path:
    """Four Testing slices of each class, four Kermany chest X-rays and a hostile folder, in one folder."""
    folder = DEPLOY / "agreement"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for label, name in enumerate(names):
        of_class = [s.path for s in samples if s.label == label]
        for i in evenly_spaced(len(of_class), 4):
            shutil.copy(of_class[i], folder / f"mri_{name}_{Path(of_class[i]).name}")
    xrays = [s.path for s in scan_kaggle_split(DATA, "test")]
    for i in evenly_spaced(len(xrays), 4):
        shutil.copy(xrays[i], folder / f"cxr_{Path(xrays[i]).name}")
    write_hostile_folder(folder / "hostile_mri_slice_in_every_format", samples[0].path)
    return folder


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=WORK / "densenet121_4class_seed1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    samples = scan_kaggle_split(MRI, "Testing")
    names = class_folders(MRI / "Testing")  # the order of scan_kaggle_split's labels
    paths, labels = [s.path for s in samples], np.array([s.label for s in samples])
    parity = [paths[i] for i in evenly_spaced(len(paths), 64)]
    export_started = time.perf_counter()
    card = export_run(args.run, DEPLOY / "export", parity_paths=parity)
    export_seconds = time.perf_counter() - export_started
    onnx = DEPLOY / "export" / "model.onnx"
    folder = agreement_folder(samples, names)
    xrays = [s.path for s in scan_kaggle_split(DATA, "test")]
    write_result("brain_mri_deploy", {
        "run": str(args.run.relative_to(ROOT) if args.run.is_relative_to(ROOT) else args.run),
        "data": f"shared/data/{MRI.name}/Testing ({len(paths)} slices); chest X-rays: shared/data/chest_xray_224/test",
        "classes": names,
        "export": {"seconds": round(export_seconds, 1), "parity": card.get("onnx_parity")},
        "testing": screen_all(args.run, onnx, paths, labels, names),
        "agreement": agreement([args.run, onnx], folder),
        "web_answer": web_answer(onnx, str(sorted(folder.glob("mri_*"))[0])),
        "chest_xrays_to_the_exported_mri_model": screening_counts(load(onnx).screen(xrays, desc="chest X-rays")),
        "wall_seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
