"""Input-check benchmark: what a trained model refuses, flags and scores, on data kept out of fitting.

    python -m bench.qc --run runs/kermany_dn121

1. Fits the run's input checks again (``pneumoscan checks``' function) with examples of both sides:
   half of every source of ``adult_cxr_reference`` (split by ``orig_sha256``) to accept, and the
   glioma / meningioma / pituitary slices of brain MRI Training to refuse. Made non-X-rays
   (``data.not_xray``, seed 0, the fitting photos) are part of every fit.
2. Screens, with the one ``Screener`` every entry point uses, data none of that saw: the Kermany test
   split (224 px and original aspect), the other half of the adult films, every brain MRI Testing
   slice (its ``notumor`` class comes from a source never fitted on), held-out made non-X-rays
   (another seed, the held-out photos), colour images and blank images.
3. Agreement: a hostile folder (``tests/hostile.py``) plus real files of every kind, screened by the
   CLI (``pneumoscan predict``), the Python API and the web API (FastAPI's test client), for the run
   folder and its ONNX export.
4. Overhead: what the checks add to screening 256 test images (rules on the decoded file, and the
   shift and gate products inside the graph), against the whole screening time.

Writes ``bench/results/qc.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import mimetypes
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tests.hostile import write_hostile_folder

from bench.common import ROOT, SHARED, launch_commit, write_result
from pneumoscan.data import evenly_spaced, expand_inputs, scan_kaggle_split
from pneumoscan.data.io import _pillow_colourfulness
from pneumoscan.evaluate.report import screening_counts
from pneumoscan.inference.screen import REFUSED, SCORED, load
from pneumoscan.input_checks.checks import InputCheckSettings, rule_refusal
from pneumoscan.input_checks.not_xray import PHOTOS_HELD_OUT, colour_images, made_images, skimage_photo

ADULT = SHARED / "data" / "adult_cxr_reference"
MRI = SHARED / "data" / "brain_tumor_mri"
KERMANY, ORIG256 = SHARED / "data" / "chest_xray_224", SHARED / "data" / "chest_xray_orig256"
WORK = ROOT / "bench" / "work" / "qc"


def adult_halves() -> tuple[list[str], list[str], dict[str, str]]:
    """(fit paths, held-out paths, source of each path): each source split by the first hex digit of its sha256."""
    fit, held_out, source = [], [], {}
    with (ADULT / "MANIFEST.csv").open() as handle:
        for row in csv.DictReader(handle):
            path = str(ADULT / row["file"])
            source[path] = row["source"]
            (fit if int(row["orig_sha256"][0], 16) < 8 else held_out).append(path)
    return fit, held_out, source


def write_list(paths: list[str], name: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    target = WORK / name
    target.write_text("path\n" + "".join(f"{p}\n" for p in paths))
    return target


def refit(run: Path, adult_fit: list[str]) -> dict:
    from pneumoscan.train.finish import refit_input_checks

    refuse = [str(p) for cls in ("glioma", "meningioma", "pituitary")
              for p in sorted((MRI / "Training" / cls).iterdir())]
    settings = InputCheckSettings(accept=(str(write_list(adult_fit, "accept_adult_fit.csv")),),
                                  refuse=(str(write_list(refuse, "refuse_mri_training.csv")),))
    started = time.perf_counter()
    report = refit_input_checks(run, settings)
    return {"seconds": round(time.perf_counter() - started, 1), **report["fitted_on"]}


def png(gray_or_rgb: np.ndarray) -> bytes:
    array = gray_or_rgb if gray_or_rgb.dtype == np.uint8 else (np.clip(gray_or_rgb, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def held_out_not_xray(per_kind: int) -> dict[str, list[tuple[str, bytes]]]:
    """Uploads of every kind of non-X-ray that fitting never saw (seed 99, the held-out photos, also each of
    them whole, in grey)."""
    kinds = {kind: [(f"{kind}_{i}.png", png(im)) for i, im in enumerate(images)]
             for kind, images in made_images(per_kind, seed=99, photos=PHOTOS_HELD_OUT).items()}
    kinds["colour_rgb"] = [(f"colour_rgb_{i}.png", png(im)) for i, im in enumerate(colour_images(per_kind, seed=99))]
    kinds["photo_whole"] = [(f"photo_whole_{name}.png", png(skimage_photo(name))) for name in PHOTOS_HELD_OUT]
    levels = np.linspace(0, 1, per_kind)
    kinds["blank"] = [(f"blank_{i}.png", png(np.full((256, 256), v, np.float32))) for i, v in enumerate(levels)]
    return kinds


def summarize(results, extra: dict | None = None) -> dict:
    counts = screening_counts(results)
    return {**counts, **(extra or {})}


def by_group(results, group_of) -> dict:
    groups: dict[str, list] = {}
    for r in results:
        groups.setdefault(group_of(r.source), []).append(r)
    return {name: summarize(rs) for name, rs in sorted(groups.items())}


def cli_outcomes(model: Path, folder: Path) -> list[tuple[str, float | None]]:
    out = WORK / f"agreement_{model.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pneumoscan.cli", "-q", "predict", str(model), str(folder), "--out", str(out)]
    subprocess.run(command, check=False, capture_output=True)
    return [(r["status"], float(r["probability"]) if r["probability"] else None) for r in csv.DictReader(out.open())]


def server_outcomes(model: Path, paths: list[str]) -> list[tuple[str, float | None]]:
    from fastapi.testclient import TestClient

    from pneumoscan.serve import create_app

    client = TestClient(create_app(model))
    outcomes = []
    for path in paths:
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        upload = (Path(path).name, Path(path).read_bytes(), content_type)
        body = client.post("/v1/predict", files={"file": upload}).json()
        outcomes.append((body["status"], body.get("probability")))
    return outcomes


def agreement(models: list[Path], folder: Path) -> dict:
    """Outcomes and probabilities of the CLI, the Python API and the server, file by file, for each model."""
    paths = expand_inputs([folder])
    report = {"files": len(paths), "models": [m.name for m in models], "mismatches": 0, "max_prob_diff": 0.0,
              "outcomes": {}}
    for model in models:
        api = [(r.status, r.probability) for r in load(model).screen(paths, progress=False)]
        for path, a, c, s in zip(paths, api, cli_outcomes(model, folder), server_outcomes(model, paths)):
            same = a[0] == c[0] == s[0]
            if same and a[0] == SCORED:
                diff = max(abs(a[1] - c[1]), abs(a[1] - s[1]))
                report["max_prob_diff"] = max(report["max_prob_diff"], diff)
                same = diff <= 1e-5
            report["mismatches"] += not same
            report["outcomes"].setdefault(Path(path).name, a[0])
    return report


def overhead(screener, paths: list[str], repeats: int = 3) -> dict:
    """Seconds per image of screening, and of what the checks add: the rules on the decoded files and the
    shift and gate products in the graph (timed on the pooled features the graph computes anyway)."""
    screen_times, rule_times = [], []
    images = [Image.open(p) for p in paths]
    for im in images:
        im.load()
    for _ in range(repeats):
        started = time.perf_counter()
        screener.screen(paths, progress=False)
        screen_times.append((time.perf_counter() - started) / len(paths))
        started = time.perf_counter()
        for im in images:
            rule_refusal(np.asarray(im.convert("L"), np.float32) / 255, _pillow_colourfulness(im), "chest X-ray")
        rule_times.append((time.perf_counter() - started) / len(paths))
    graph = screener.engine.graph
    shift_features, pooled = torch.randn(16, graph.shift_mean.shape[0]), torch.randn(16, graph.gate_weight.shape[0])
    started = time.perf_counter()
    for _ in range(50):
        centred = shift_features - graph.shift_mean
        ((centred @ graph.shift_precision) * centred).sum(dim=1)
        torch.sigmoid(pooled @ graph.gate_weight + graph.gate_bias)
    graph_time = (time.perf_counter() - started) / (50 * 16)
    per_image = statistics.median(screen_times)
    checks = statistics.median(rule_times) + graph_time
    return {"images": len(paths), "screen_seconds_per_image": per_image, "rules_seconds_per_image":
            statistics.median(rule_times), "graph_checks_seconds_per_image": graph_time,
            "overhead_ratio": checks / per_image}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "runs" / "kermany_dn121"), help="a finished Kermany run folder")
    parser.add_argument("--made-per-kind", type=int, default=40)
    parser.add_argument("--skip-refit", action="store_true",
                        help="keep the run's current input checks (fitted by an earlier run of this benchmark)")
    args = parser.parse_args()
    started = time.perf_counter()
    run = Path(args.run)
    adult_fit, adult_held_out, adult_source = adult_halves()
    fit = (json.loads((run / "input_checks.json").read_text())["fitted_on"] if args.skip_refit
           else refit(run, adult_fit))
    screener = load(run)

    kermany = screener.screen([s.path for s in scan_kaggle_split(KERMANY, "test")], desc="kermany test")
    orig = screener.screen([s.path for s in scan_kaggle_split(ORIG256, "test")], desc="kermany test 256")
    orig_val = screener.screen([s.path for s in scan_kaggle_split(ORIG256, "val")], progress=False)
    adult = screener.screen(adult_held_out, desc="adult held out")
    mri = screener.screen(expand_inputs([MRI / "Testing"]), desc="brain MRI testing")
    made = {kind: screener.screen(uploads, progress=False) for kind, uploads in
            held_out_not_xray(args.made_per_kind).items()}
    not_xray = mri + [r for results in made.values() for r in results]

    hostile = WORK / "hostile"
    kinds = write_hostile_folder(hostile, scan_kaggle_split(KERMANY, "test")[0].path)
    for i, path in enumerate([adult_held_out[0], adult_held_out[-1], str(expand_inputs([MRI / "Testing"])[0])]):
        (hostile / f"real_{i}{Path(path).suffix}").write_bytes(Path(path).read_bytes())
    from pneumoscan.export.files import export_run

    export_run(run, WORK / "export")
    agree = agreement([run, WORK / "export" / "model.onnx"], hostile)
    test_paths = [s.path for s in scan_kaggle_split(KERMANY, "test")]
    cost = overhead(screener, [test_paths[i] for i in evenly_spaced(len(test_paths), 256)])

    result = {
        "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run),
        "data": {"kermany_test": "shared/data/chest_xray_224/test",
                 "kermany_test_orig256": "shared/data/chest_xray_orig256/test",
                 "kermany_val_orig256": "shared/data/chest_xray_orig256/val",
                 "adult": "shared/data/adult_cxr_reference (held-out half: orig_sha256 first hex digit >= 8)",
                 "brain_mri": "shared/data/brain_tumor_mri/Testing (fit: Training glioma, meningioma, pituitary)",
                 "made": f"pneumoscan.input_checks.not_xray, seed 99, held-out photos {list(PHOTOS_HELD_OUT)}"},
        "fit": fit,
        "limits": screener.limits,
        "kermany_test": summarize(kermany, {"by_class": by_group(kermany, lambda p: Path(p).parent.name)}),
        "kermany_test_orig256": summarize(orig),
        "kermany_val_orig256": summarize(orig_val, {"note": "the official val split at original aspect: the "
                                                            "non-test check the shift score's settings were read on"}),
        "adult_heldout": summarize(adult, {"by_source": by_group(adult, adult_source.__getitem__)}),
        "brain_mri": summarize(mri, {"by_class": by_group(mri, lambda p: Path(p).parent.name)}),
        "made_not_xray": {kind: summarize(results) for kind, results in made.items()},
        "not_xray": {"images": len(not_xray), "scored": sum(r.scored for r in not_xray),
                     "refused": sum(r.status == REFUSED for r in not_xray),
                     "scored_files": [r.source for r in not_xray if r.scored]},
        "agreement": agree,
        "hostile_kinds": kinds,
        "overhead": cost,
        "overhead_ratio": cost["overhead_ratio"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_result("qc", result)
    for name in ("kermany_test", "kermany_test_orig256", "kermany_val_orig256", "adult_heldout", "brain_mri"):
        r = result[name]
        print(f"{name}: {r['images']} images, refused {r['refused_fraction']:.3f}, flagged {r['flagged_fraction']:.3f}")
    print(f"not X-ray: {result['not_xray']['images']} images, {result['not_xray']['scored']} scored; agreement "
          f"{agree['files']} files x {len(agree['models'])} models, {agree['mismatches']} mismatches; overhead "
          f"{cost['overhead_ratio']:.4f}")


if __name__ == "__main__":
    main()
