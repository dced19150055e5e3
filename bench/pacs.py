"""The DICOM node benchmark: Kermany test films through a real Orthanc, as a reading room would send them.

    python -m bench.pacs [--films 200] [--associations 4]

Kermany test films (half NORMAL, half PNEUMONIA) are wrapped as DX with a modality's tags, one study per film;
some keep their original JPEG bitstream (JPEG baseline), some are JPEG 2000 or RLE. Hostile objects join
them: CT and MR slices, real lateral films (``lung_masks/ieee8023/laterals``), a text report and films whose
pixel data is cut short. A modality (pynetdicom) sends everything to Orthanc over several concurrent
associations, Orthanc forwards each instance to the node (``pneumoscan dicom-node``, a subprocess, the default
DenseNet121 run with its lung segmenter) with a Lua script, and the node sends its reports and overlays back.

``run`` records: ``instances`` sent, ``results_back`` (screenable instances with their report in Orthanc),
``lost`` (screenable instances without one, or instances missing from the inbox), ``duplicates`` (reports in
Orthanc beyond one per film), ``sr_mismatches`` (reports whose probability differs from ``pneumoscan
predict`` on the same files by more than 1e-5), ``throughput_ratio`` (screenable images per second from the
first C-STORE to the last result stored in Orthanc, over the images per second of the screener that
``pneumoscan predict`` runs, on the same files after loading), ``p95_seconds_to_result`` (from the modality's
C-STORE to the node's result accepted by Orthanc). Everything runs on this machine's cores, PACS and modality
included; ``cpu_seconds`` says what each part used during the run, and ``cpu_ratio`` is predict's CPU time per
image over the node's (its screening and DICOM processes): the throughput ratio a node would reach with the cores
to itself, the PACS elsewhere. ``restart`` sends again to a fresh Orthanc and node, kills
the node (SIGKILL) once every instance has reached it and at least a third of the films are screened, starts
it again on the same inbox, and records what was lost or duplicated (Orthanc's Lua forward does not retry, so
the kill waits for the forwarding: the node's own losses are what is measured).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import DATA, ROOT, SHARED, launch_commit, write_result

WORK = ROOT / "bench" / "work" / "pacs"
MODEL = ROOT / "bench" / "work" / "anatomy" / "densenet121_lungs"  # the default DenseNet121 run, lungs attached
LATERALS = SHARED / "data" / "lung_masks" / "ieee8023" / "laterals"


def make_films(count: int) -> tuple[list[Path], list[Path]]:
    """(screenable DX files, hostile files) under ``WORK/films``, made once."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    from tests.dicom_films import broken_film, ct_slice, dx_film, mr_slice, new_study, report, save

    from pneumoscan.data.io import load_image

    folder = WORK / "films"
    listing = folder / "films.json"
    made = json.loads(listing.read_text()) if listing.exists() else {}
    if made.get("films") == count:
        return [folder / p for p in made["screenable"]], [folder / p for p in made["hostile"]]
    films = [sorted((DATA / "test" / c).iterdir())[: count // 2] for c in ("NORMAL", "PNEUMONIA")]
    screenable = []
    for i, path in enumerate(f for pair in zip(*films) for f in pair):
        study = new_study(i)
        if i % 4 == 1:  # the original JPEG bitstream, encapsulated: what a modality storing JPEG sends
            ds = dx_film(load_image(path), study)
            ds.PixelData = encapsulate([path.read_bytes()])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            ds.LossyImageCompression = "01"
        else:
            ds = dx_film(load_image(path), study, compression={3: "jpeg2000", 2: "rle"}.get(i % 4, ""))
        ds.SeriesDescription, ds.ProtocolName = "CHEST PA", "Chest PA"
        ds.StationName, ds.OperatorsName, ds.KVP, ds.Exposure = "XR-ROOM-1", "Tech^A", 80, 2
        screenable.append(save(ds, folder / f"film{i:04d}_{path.stem}.dcm"))
    hostile_study = new_study(99999)
    laterals = sorted(LATERALS.iterdir())[:3]
    hostile = [save(ct_slice(hostile_study), folder / "hostile_ct.dcm"),
               save(mr_slice(hostile_study), folder / "hostile_mr.dcm"),
               save(report(hostile_study), folder / "hostile_report.dcm")]
    for j, path in enumerate(laterals):  # real lateral films, sent as DX whose header says so (and one that does not)
        gray = np.asarray(Image.open(path).convert("L"), np.float32) / 255
        hostile.append(save(dx_film(gray, new_study(90000 + j), view="LL" if j < 2 else ""),
                            folder / f"lateral{j}.dcm"))
    for j in range(2):
        hostile.append(save(broken_film(load_image(films[0][j]), new_study(91000 + j)), folder / f"broken{j}.dcm"))
    assert pydicom.dcmread(screenable[1]).pixel_array.shape == (224, 224)  # the encapsulated JPEG decodes
    listing.write_text(json.dumps({"films": count, "screenable": [p.name for p in screenable],
                                   "hostile": [p.name for p in hostile]}))
    return screenable, hostile


def predicted(files: list[Path]) -> tuple[dict[str, dict], float]:
    """``pneumoscan predict``'s rows by SOP instance UID, and its screener's images per second after loading."""
    import pydicom

    from pneumoscan.inference.screen import load

    out = WORK / "predict.csv"
    subprocess.run([sys.executable, "-m", "pneumoscan.cli", "predict", str(MODEL), *map(str, files), "--out",
                    str(out)], check=False, capture_output=True)
    rows = {str(pydicom.dcmread(r["path"], stop_before_pixels=True).SOPInstanceUID): r
            for r in csv.DictReader(out.open())}
    screener = load(MODEL)
    screener.screen([str(f) for f in files[:16]], progress=False)  # warm up
    rates, cpu = [], []
    for _ in range(2):  # the faster of two: the ratio is not flattered by a slow measure of predict
        started, cpu_started = time.perf_counter(), time.process_time()
        screener.screen([str(f) for f in files], progress=False)
        rates.append(len(files) / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu_started) / len(files))
    return rows, max(rates), min(cpu)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far, its threads included (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_by_part(node: subprocess.Popen, orthanc) -> dict[str, float]:
    """CPU seconds so far of the node's screening process, its DICOM side, Orthanc, and this process (the
    modality's sends and the bench's reading)."""
    return {"node_screening": cpu_seconds(node.pid), "node_dicom_side": sum(cpu_seconds(c) for c in children(node.pid)),
            "orthanc": cpu_seconds(orthanc.process.pid), "modality_and_bench": time.process_time()}


def start_node(inbox: Path, port: int, orthanc_port: int) -> subprocess.Popen:
    log = open(inbox.parent / f"{inbox.name}.log", "a")  # noqa: SIM115 - the node writes it until stopped
    node = subprocess.Popen([sys.executable, "-m", "pneumoscan.cli", "dicom-node", str(MODEL), "--inbox", str(inbox),
                             "--port", str(port), "--host", "127.0.0.1",
                             "--send-to", f"127.0.0.1:{orthanc_port}:ORTHANC"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if echo(port, "PNEUMOSCAN"):
            return node
        time.sleep(0.5)
    raise RuntimeError("the node did not answer C-ECHO within 120 s")


def echo(port: int, ae_title: str) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return getattr(status, "Status", None) == 0


MODALITY_TRIES = 3  # a modality whose association fails or ends associates again and sends the rest


def send_all(files: list[Path], port: int, associations: int) -> tuple[dict[str, float], int]:
    """C-STORE ``files`` to Orthanc over ``associations`` concurrent associations; returns each SOP instance UID's
    time sent, and how often a worker whose association failed or ended associated again to send the rest (as a
    modality would; ``MODALITY_TRIES`` times in all)."""
    import pydicom
    from pynetdicom import AE

    sent: dict[str, float] = {}
    again = []

    def worker(part: list[Path]) -> None:
        datasets = [pydicom.dcmread(p) for p in part]
        ae = AE(ae_title="MODALITY")
        for sop_class, syntax in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}:
            ae.add_requested_context(sop_class, [syntax])
        for _ in range(MODALITY_TRIES):
            assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
            for ds in datasets:
                if str(ds.SOPInstanceUID) in sent or not assoc.is_established:
                    continue
                status = assoc.send_c_store(ds)
                if getattr(status, "Status", None) == 0:
                    sent[str(ds.SOPInstanceUID)] = time.time()
            if assoc.is_established:
                assoc.release()
            if all(str(ds.SOPInstanceUID) in sent for ds in datasets):
                return
            again.append(1)

    threads = [threading.Thread(target=worker, args=(files[i::associations],)) for i in range(associations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent, len(again)


def inbox_rows(inbox: Path) -> list[dict]:
    if not (inbox / "inbox.sqlite").exists():
        return []
    with sqlite3.connect(f"file:{inbox / 'inbox.sqlite'}?mode=ro", uri=True, timeout=30) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM instances")]


def wait_until_done(inbox: Path, expected: int, seconds: float = 900) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = inbox_rows(inbox)
        if len(rows) >= expected and all(r["state"] in ("sent", "skipped") for r in rows):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the node did not finish within {seconds:.0f} s")


def reports_in(orthanc) -> list:
    """Every report pneumoscan stored in Orthanc, read back."""
    import pydicom

    found = []
    for series in orthanc.get("/series?expand"):
        if series["MainDicomTags"].get("Modality") == "SR":
            found += [pydicom.dcmread(io.BytesIO(orthanc.file(i))) for i in series["Instances"]]
    return [ds for ds in found if ds.get("Manufacturer") == "pneumoscan"]  # not the hostile report sent in


def outcome(orthanc, inbox: Path, screenable_uids: set[str], predictions: dict[str, dict]) -> dict:
    """What came back: results, lost, duplicates, mismatches against predict."""
    from tests.test_node import reported_probabilities

    reports = reports_in(orthanc)
    by_source: dict[str, int] = {}
    for sr in reports:
        source = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        by_source[source] = by_source.get(source, 0) + 1
    reported = reported_probabilities(reports)
    mismatches = 0
    for uid, row in predictions.items():
        expected = float(row["p_PNEUMONIA"]) if row["status"] == "scored" else None
        got = reported.get(uid)
        if (expected is None) != (got is None) or (expected is not None and abs(expected - got) > 1e-5):
            mismatches += 1
    rows = inbox_rows(inbox)
    return {"results_back": sum(1 for uid in screenable_uids if by_source.get(uid)),
            "lost": sum(1 for uid in screenable_uids if not by_source.get(uid)),
            "duplicates": sum(n - 1 for n in by_source.values() if n > 1),
            "resent": sum(1 for r in rows if r["send_attempts"] > 1),
            "sr_mismatches": mismatches, "reports_in_orthanc": len(reports),
            "overlays_in_orthanc": sum(len(s["Instances"]) for s in orthanc.get("/series?expand")
                                       if s["MainDicomTags"].get("Modality") == "OT"),
            "skipped": dict(Counter(r["reason"] for r in rows if r["state"] == "skipped")),
            "not_scored": sorted({r["reason"] for r in rows if r["state"] == "sent" and r["reason"]})}


def one_pass(files: list[Path], screenable_uids: set[str], predictions, associations: int, name: str,
             kill_after: int = 0) -> dict:
    from tests.orthanc import free_port, start_orthanc

    inbox = WORK / name
    subprocess.run(["rm", "-rf", str(inbox), str(WORK / f"{name}.log")], check=True)
    node_port = free_port()
    orthanc = start_orthanc(node_port)
    node = start_node(inbox, node_port, orthanc.dicom_port)
    try:
        cpu_before = cpu_by_part(node, orthanc)
        started = time.time()
        killed_at = None
        if kill_after:
            sent, reassociations = send_all(files, orthanc.dicom_port, associations)
            # Orthanc's Lua forward tries each instance once: the kill waits until every instance has reached
            # the node (and at least ``kill_after`` are screened), so what is measured is the node's own loss
            while (len(inbox_rows(inbox)) < len(files)
                   or sum(r["state"] in ("screened", "sent") for r in inbox_rows(inbox)) < kill_after):
                time.sleep(0.05)
            node.send_signal(signal.SIGKILL)
            node.wait()
            killed_at = {"screened": sum(r["state"] in ("screened", "sent") for r in inbox_rows(inbox)),
                         "received": len(inbox_rows(inbox)), "seconds": round(time.time() - started, 1)}
            node = start_node(inbox, node_port, orthanc.dicom_port)
        else:
            sent, reassociations = send_all(files, orthanc.dicom_port, associations)
        wait_until_done(inbox, len(files))
        cpu = {part: round(seconds - cpu_before[part], 1) for part, seconds in cpu_by_part(node, orthanc).items()}
        finished = max(r["sent_at"] or 0 for r in inbox_rows(inbox))
        time.sleep(1.0)
        result = outcome(orthanc, inbox, screenable_uids, predictions)
        rows = {r["sop_instance_uid"]: r for r in inbox_rows(inbox)}
        to_result = [rows[u]["sent_at"] - sent[u] for u in screenable_uids if u in sent and rows.get(u)
                     and rows[u]["sent_at"]]
        result |= {"instances": len(files), "sent_ok": len(sent), "modality_reassociations": reassociations,
                   "in_inbox": len(rows),
                   "lost": result["lost"] + sum(1 for u in sent if u not in rows),
                   "wall_seconds": round(finished - started, 2),
                   "images_per_second": round(len(screenable_uids) / (finished - started), 3),
                   "p95_seconds_to_result": round(float(np.percentile(to_result, 95)), 2),
                   "median_seconds_to_result": round(float(np.median(to_result)), 2),
                   "cpu_seconds": cpu if not killed_at else "not measured across the kill",
                   "node_cpu_ms_per_image": round(1000 * (cpu["node_screening"] + cpu["node_dicom_side"])
                                                  / len(screenable_uids), 1) if not killed_at else None}
        if killed_at:
            result["killed_at"] = killed_at
        return result
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            node.wait(60)
        orthanc.stop()


def drawn_and_checked(inbox: Path) -> dict:
    """What the optional presentation state (``dicom-node --gsps``) costs a scored film, built from the screenings
    the node kept in ``inbox``, and how many of the node's results the standard's validators fault: dicom3tools'
    ``dciodvfy`` (every report, overlay and presentation state) and DCMTK's ``dcmpschk`` (presentation states)."""
    import shutil
    from datetime import datetime

    import pydicom

    from pneumoscan.inference.screen import load
    from pneumoscan.node.maker import ResultMaker
    from pneumoscan.node.presentation import presentation_state
    from pneumoscan.node.results import Film, kept_screening

    if not (shutil.which("dciodvfy") and shutil.which("dcmpschk")):
        return {"not measured": "dciodvfy (dicom3tools) or dcmpschk (dcmtk) is not installed"}
    maker = ResultMaker(load(MODEL).description, "bench", built_whole={"pr": presentation_state})  # as --gsps
    seconds, faulted = [], Counter()
    for row in inbox_rows(inbox):
        folder = inbox / "results" / row["sop_instance_uid"]
        if not (folder / "sc.dcm").exists():
            continue
        header = pydicom.dcmread(inbox / row["path"], stop_before_pixels=True)
        film = Film(kept_screening(folder), header, datetime.now())
        started = time.perf_counter()
        for name, data in maker.extras(film).items():
            (folder / name).write_bytes(data)
        seconds.append(time.perf_counter() - started)
    checked = Counter()
    for path in sorted(inbox.glob("results/*/*.dcm")):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        checked[path.stem] += 1
        faulted[path.stem] += any(line.startswith("Error") for line in (out.stdout + out.stderr).splitlines())
    states = sorted(str(p) for p in inbox.glob("results/*/pr.dcm"))
    out = subprocess.run(["dcmpschk", *states], capture_output=True, text=True)
    return {"gsps_ms_per_film": round(1000 * float(np.mean(seconds)), 1), "gsps_films": len(seconds),
            "dciodvfy_checked": dict(checked), "dciodvfy_faulted": {kind: faulted[kind] for kind in checked},
            "dcmpschk_passed": (out.stdout + out.stderr).count("Test passed"), "dcmpschk_checked": len(states)}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--films", type=int, default=200)
    parser.add_argument("--associations", type=int, default=4)
    args = parser.parse_args()
    import pydicom

    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    screenable, hostile = make_films(args.films)
    files = screenable + hostile
    scored_by_predict = screenable + [h for h in hostile if "lateral" in h.name or "broken" in h.name]
    predictions, predict_rate, predict_cpu = predicted(scored_by_predict)
    screenable_uids = set(predictions)
    order = np.random.default_rng(0).permutation(len(files))
    files = [files[i] for i in order]
    run = one_pass(files, screenable_uids, predictions, args.associations, "run")
    drawn = drawn_and_checked(WORK / "run")
    restart = one_pass(files, screenable_uids, predictions, args.associations, "restart",
                       kill_after=len(screenable) // 3)
    result = {
        "instances": len(files), "screenable": len(screenable_uids), "associations": args.associations,
        "results_back": run["results_back"], "lost": run["lost"], "duplicates": run["duplicates"],
        "sr_mismatches": run["sr_mismatches"],
        "throughput_ratio": round(run["images_per_second"] / predict_rate, 3),
        "node_images_per_second": run["images_per_second"], "predict_images_per_second": round(predict_rate, 3),
        "cpu_ratio": round(1000 * predict_cpu / run["node_cpu_ms_per_image"], 3),
        "node_cpu_ms_per_image": run["node_cpu_ms_per_image"], "predict_cpu_ms_per_image": round(1000 * predict_cpu, 1),
        "cpu_seconds": run["cpu_seconds"],
        "p95_seconds_to_result": run["p95_seconds_to_result"],
        "restart": {"killed_at": restart["killed_at"], "lost": restart["lost"], "duplicates": restart["duplicates"],
                    "resent": restart["resent"], "results_back": restart["results_back"],
                    "sr_mismatches": restart["sr_mismatches"]},
        "results_checked": drawn, "run": run, "restart_pass": restart,
        "model": str(MODEL.relative_to(ROOT)), "orthanc": orthanc_version(),
        "pynetdicom": __import__("pynetdicom").__version__, "pydicom": pydicom.__version__,
        "data": f"shared/data/chest_xray_224/test ({len(screenable)} films) + hostile objects",
        "commit": launch_commit(), "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_threads": os.cpu_count(),
    }
    write_result("pacs", result)


def orthanc_version() -> str:
    out = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""


if __name__ == "__main__":
    main()
