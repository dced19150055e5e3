"""What every benchmark records beside its numbers: commit, machine, data, time."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# ../shared beside the checkout; a lent GPU machine, which has none, points PNEUMOSCAN_SHARED at the copy
# that bench/device_pack.sh sends (see that script)
SHARED = Path(os.environ.get("PNEUMOSCAN_SHARED") or ROOT.parent / "shared")
DATA = SHARED / "data" / "chest_xray_224"
DATA_NAME = f"shared/{DATA.relative_to(SHARED)}"  # how the results name it, wherever it was read
WEIGHTS = {"densenet121": SHARED / "weights" / "densenet121_imagenet_keras.pth",
           "resnet50": SHARED / "weights" / "resnet50_imagenet_keras_partial.pth"}


def commit() -> str:
    """The commit the benchmark ran on (with "+dirty" when the tree had uncommitted changes).

    A copy of the tree without its git folder (a lent GPU machine) names it in ``BENCH_COMMIT``.
    """
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"] + " (copy of the tree, named by BENCH_COMMIT)"
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return sha + ("+dirty" if dirty else "")


LAUNCH_COMMIT = None  # set on first use: the commit the benchmark started from


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "amx": "amx_tile" in flags, "avx512_bf16": "avx512_bf16" in flags, "gpu": torch.cuda.is_available(),
            "gpu_name": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def launch_commit() -> str:
    """The commit at the start of the benchmark (call early: the tree may change while it runs)."""
    global LAUNCH_COMMIT
    if LAUNCH_COMMIT is None:
        LAUNCH_COMMIT = commit()
    return LAUNCH_COMMIT


def write_result(name: str, payload: dict) -> Path:
    """Write ``bench/results/<name>.json`` with the provenance fields added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "commit": launch_commit(), "machine": machine(),
               "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``<!-- name:begin -->`` and ``<!-- name:end -->`` lines of ``path`` (a document
    whose numbers a benchmark writes, so that nobody copies them by hand)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    document = path.read_text()
    if begin not in document or end not in document:
        raise ValueError(f"{path}: no {begin} ... {end} section to replace")
    head, rest = document.split(begin, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
