"""Quick-start benchmark: what a new user gets in the first minutes after cloning.

    python -m bench.quickstart [--skip-demo] [--render-only]

1. ``pneumoscan train --recipe quick`` on the Kermany set from a cold activation cache, as a user types it (a
   subprocess, Python start-up included): its wall time and the test metrics at the validation threshold.
2. ``make demo`` in a fresh clone of the committed tree (the virtual environment created and installed from
   nothing; pip's own download cache is left as it is): its wall time, the demo's numbers, and the size of the
   environment it installed; then the test extras installed into that environment (``make test``'s install), and
   the size again.

Writes ``bench/results/quickstart.json`` and rewrites the demo section of ``docs/results.md`` from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, DATA_NAME, RESULTS, ROOT, WEIGHTS, launch_commit, replace_section, write_result

WORK = ROOT / "bench" / "work" / "quickstart"
RESULTS_MD = ROOT / "docs" / "results.md"


def quick_run() -> dict:
    """The quick recipe from a cold cache, timed around the command a user runs."""
    run_dir, cache = WORK / "run", WORK / "cache"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    command = [str(Path(sys.executable).with_name("pneumoscan")), "train", "--recipe", "quick", "--data", str(DATA),
               "--weights", str(WEIGHTS["densenet121"]), "--out", str(run_dir), "--set", f"cache_dir={cache}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]["at_threshold"]
    keys = ("auc", "accuracy", "sensitivity", "specificity")
    return {"command": " ".join(["pneumoscan", *command[1:]]), "wall_seconds": round(wall, 1),
            "test": {**{k: test[k] for k in keys}, "ci95": {k: test["ci95"][k] for k in keys}},
            "validation_auc": metrics["validation"]["at_threshold"]["auc"], "threshold": metrics["threshold"],
            "test_screening": metrics["test"]["screening"], "timings_seconds": metrics["timings"],
            "cache_bytes": folder_bytes(cache)}


def fresh_clone_demo() -> dict:
    """``make demo`` in a fresh clone of HEAD, then the test extras' install; times and sizes."""
    clone = WORK / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    started = time.perf_counter()
    subprocess.run(["make", "demo"], cwd=clone, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    demo_seconds = time.perf_counter() - started
    demo_bytes = folder_bytes(clone / ".venv")
    summary = demo_numbers(clone / "runs" / "demo")
    started = time.perf_counter()
    subprocess.run(["make", ".venv/.dev"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
    test_install = time.perf_counter() - started
    test_bytes = folder_bytes(clone / ".venv")
    shutil.rmtree(clone)  # 7 GB of environment
    return {"demo_seconds": round(demo_seconds, 1), "test_extras_install_seconds": round(test_install, 1),
            "venv_bytes": {"demo": demo_bytes, "test": test_bytes}, "demo": summary}


def demo_numbers(out: Path) -> dict:
    """The numbers of the demo's report: its run's test metrics and screening, and the lesion hit rate."""
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    test = metrics["test"]["at_threshold"]
    page = (out / "report.html").read_text()
    return {"threshold": metrics["threshold"], "test_auc": test["auc"], "test_accuracy": test["accuracy"],
            "test_screening": metrics["test"]["screening"], "train_seconds": metrics["timings"]["total_seconds"],
            "lesion_hit_rate": float(page.split('id="lesions"')[1].split("<strong>")[1].split("</strong>")[0]),
            "both_classes_in_gallery": "true NORMAL" in page and "true PNEUMONIA" in page}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def results_section(result: dict) -> str:
    """The demo and quick-start paragraphs of docs/results.md, from the benchmark's numbers."""
    quick, demo = result["quick"], result.get("demo")
    test = quick["test"]
    lines = [f"`bench/quickstart.py` (commit {result['commit'][:7]}, {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores; `bench/results/quickstart.json`).", "",
             f"**Quick recipe** (`pneumoscan train --recipe quick`, cold cache, {DATA_NAME}): "
             f"{quick['wall_seconds']:.0f} s from the command to the finished run; test AUC {test['auc']:.3f} "
             f"[{test['ci95']['auc'][0]:.3f}, {test['ci95']['auc'][1]:.3f}], accuracy {test['accuracy']:.3f}, "
             f"sensitivity {test['sensitivity']:.3f}, specificity {test['specificity']:.3f} at the validation "
             f"threshold {quick['threshold']:.3f}; {quick['test_screening']['flagged']} of "
             f"{quick['test_screening']['images']} test films flagged, {quick['test_screening']['refused']} refused; "
             f"activation cache {quick['cache_bytes'] / 1e6:.0f} MB."]
    if demo:
        d = demo["demo"]
        lines += ["", f"**`make demo`** in a fresh clone: {demo['demo_seconds']:.0f} s including the install of the "
                  f"runtime (pip's download cache already held the packages, torch came from this machine's disk; "
                  f"{demo['venv_bytes']['demo'] / 1e9:.1f} GB environment; with `make test`'s extras "
                  f"{demo['venv_bytes']['test'] / 1e9:.1f} GB). 480 training and 160 test phantoms at 128 px, the "
                  f"baseline CNN for 12 epochs ({d['train_seconds']:.0f} s for the run): test AUC {d['test_auc']:.3f}, "
                  f"accuracy {d['test_accuracy']:.3f} at the validation threshold {d['threshold']:.3f}; lesion hit "
                  f"rate (the Grad-CAM peak within 15 px of a known lesion) {d['lesion_hit_rate']:.3f}; "
                  f"{d['test_screening']['flagged']} of {d['test_screening']['images']} test phantoms flagged, "
                  f"{d['test_screening']['refused']} refused."]
    return "\n".join(lines)


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-demo", action="store_true", help="time the quick recipe only")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite docs/results.md's section from the recorded quickstart.json, running nothing")
    args = parser.parse_args()
    if args.render_only:
        recorded = json.loads((RESULTS / "quickstart.json").read_text())
        replace_section(RESULTS_MD, "quickstart", results_section(recorded))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {"data": DATA_NAME, "quick": quick_run()}
    if not args.skip_demo:
        result["demo"] = fresh_clone_demo()
    result.update(wall_seconds=result["quick"]["wall_seconds"], test=result["quick"]["test"],
                  demo_seconds=result.get("demo", {}).get("demo_seconds"),
                  venv_bytes=result.get("demo", {}).get("venv_bytes"),
                  bench_wall_seconds=round(time.perf_counter() - started, 1))
    path = write_result("quickstart", result)
    replace_section(RESULTS_MD, "quickstart", results_section(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
