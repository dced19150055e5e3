"""Tests of the DICOM node: films sent over DICOM (some compressed, some hostile) are kept, screened with the one
screener and answered with a report and an overlay in the same study; what must not be screened is recorded
with the reason; a node killed mid-batch resumes without losing or repeating anything; the worklist orders the
studies by urgency."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests.dicom_films import broken_film, ct_slice, dx_film, mr_slice, new_study, report, save
from tests.orthanc import free_port, start_orthanc

pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom (a dependency) speaks DICOM")
highdicom = pytest.importorskip("highdicom", reason="highdicom (a dependency) reads the reports")

from pneumoscan.cli import main  # noqa: E402
from pneumoscan.data.synthetic import phantom_with_lungs  # noqa: E402
from pneumoscan.node.inbox import Inbox  # noqa: E402
from pneumoscan.node.run import NodeSettings, run_node  # noqa: E402


class Collector:
    """A PACS stand-in: a storage SCP that keeps what it is sent."""

    def __init__(self):
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        self.received = []
        ae = AE(ae_title="COLLECTOR")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.keep)])

    def keep(self, event):
        self.received.append(event.dataset)
        return 0x0000


def send_files(paths: list[Path], port: int, ae_title: str = "PNEUMOSCAN") -> list[int]:
    """C-STORE ``paths`` as a modality would; returns the statuses."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title="MODALITY")
    for sop_class, syntax in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(d).Status for d in datasets]
    finally:
        assoc.release()


def films(folder: Path) -> dict[str, Path]:
    """Films of three patients (one study each; compressed and plain), and the hostile objects."""
    rng = np.random.default_rng(5)
    studies = [new_study(i) for i in range(3)]
    made = {}
    for i, (name, compression) in enumerate([("plain", ""), ("jpeg2000", "jpeg2000"), ("rle", "rle"),
                                             ("second", "")]):
        film, _ = phantom_with_lungs(rng, pneumonia=bool(i % 2), size=64)
        made[name] = save(dx_film(film, studies[i % 3], compression=compression), folder / f"{name}.dcm")
    film, _ = phantom_with_lungs(rng, size=64)
    made["lateral"] = save(dx_film(film, studies[0], view="LL"), folder / "lateral.dcm")
    made["broken"] = save(broken_film(film, studies[1]), folder / "broken.dcm")
    made["ct"] = save(ct_slice(studies[2]), folder / "ct.dcm")
    made["mr"] = save(mr_slice(studies[2]), folder / "mr.dcm")
    made["report"] = save(report(studies[0]), folder / "report.dcm")
    return made


def start_node(model, inbox: Path, send_to: str = "", port: int = 0,
               gsps: bool = False) -> tuple[threading.Thread, threading.Event, int]:
    port, stop, ready = port or free_port(), threading.Event(), threading.Event()
    settings = NodeSettings(model=str(model), inbox=str(inbox), port=port, host="127.0.0.1", send_to=send_to,
                            idle_seconds=0.05, retry_seconds=0.2, gsps=gsps)
    thread = threading.Thread(target=run_node, args=(settings, stop), kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(60)
    return thread, stop, port


def wait_for(condition, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_the_node_answers_each_film_with_a_report_and_an_overlay_in_its_study(lung_model, tmp_path):
    import pydicom

    made = films(tmp_path / "films")
    collector = Collector()
    thread, stop, port = start_node(lung_model, tmp_path / "inbox", f"127.0.0.1:{collector.port}:COLLECTOR")
    try:
        statuses = send_files(list(made.values()) + [made["plain"]], port)  # the first film twice
        assert statuses == [0] * (len(made) + 1)
        inbox = Inbox(tmp_path / "inbox")
        wait_for(lambda: set(inbox.counts()) <= {"sent", "skipped"} and sum(inbox.counts().values()) == len(made))
    finally:
        stop.set()
        thread.join(30)
        collector.server.shutdown()
    rows = {Path(r["path"]).name: r for r in inbox.rows()}
    by_uid = {str(pydicom.dcmread(p).SOPInstanceUID): name for name, p in made.items()}
    states = {by_uid[r["sop_instance_uid"]]: (r["state"], r["reason"]) for r in rows.values()}
    assert len(rows) == len(made)  # the film sent twice is kept once
    for name in ("ct", "mr", "report"):
        assert states[name][0] == "skipped" and "not a projection X-ray" in states[name][1]
    assert "lateral" in states["lateral"][1] and "unreadable" in states["broken"][1].lower()
    reports = [d for d in collector.received if d.Modality == "SR"]
    captures = [d for d in collector.received if d.Modality != "SR"]
    screenable = ["plain", "jpeg2000", "rle", "second", "lateral", "broken"]
    assert len(reports) == len(screenable) and len(captures) == 4
    # the numbers in the reports are the screener's on the same files (what pneumoscan predict says)
    assert main(["predict", str(lung_model), *[str(made[n]) for n in screenable], "--out",
                 str(tmp_path / "p.csv")]) == 1  # 1: a file was unreadable (the broken one)
    predicted = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "p.csv").open())}
    sources = {str(pydicom.dcmread(made[n]).SOPInstanceUID): n for n in screenable}
    for sr in reports:
        reference = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        name = sources[reference]
        source = pydicom.dcmread(made[name])
        assert (sr.StudyInstanceUID, sr.PatientID) == (source.StudyInstanceUID, source.PatientID)
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID
        parsed = highdicom.sr.Comprehensive3DSR.from_dataset(sr)
        group = parsed.content.get_image_measurement_groups()[0]
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        row = predicted[f"{name}.dcm"]
        if row["status"] == "scored":
            assert measured["Probability of PNEUMONIA"] == pytest.approx(float(row["p_PNEUMONIA"]), abs=1e-5)
            assert group.get_qualitative_evaluations()[0].value.meaning == row["label"]
        else:
            assert not measured and group.get_qualitative_evaluations()[0].value.meaning == "NOT SCREENED"
    for capture in captures:
        assert capture.BurnedInAnnotation == "YES" and "RESEARCH USE" in capture.SeriesDescription


def test_a_node_killed_mid_batch_screens_and_sends_each_instance_once(lung_model, tmp_path, monkeypatch):
    from pneumoscan.node import screening
    from pneumoscan.node.worklist import worklist

    made = films(tmp_path / "films")
    collector = Collector()
    peer = f"127.0.0.1:{collector.port}:COLLECTOR"
    calls = {"n": 0}
    real_record = screening.record

    def crash_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed")  # the process dies between two records of one batch
        return real_record(*args, **kwargs)

    monkeypatch.setattr(screening, "record", crash_after_two)
    thread, stop, port = start_node(lung_model, tmp_path / "inbox", peer)
    send_files(list(made.values()), port)
    thread.join(60)  # the screening loop died
    assert not thread.is_alive()
    inbox = Inbox(tmp_path / "inbox")
    assert inbox.counts().get("received", 0) > 0  # work left: received, not screened
    monkeypatch.setattr(screening, "record", real_record)
    thread, stop, port = start_node(lung_model, tmp_path / "inbox", peer)
    try:
        wait_for(lambda: set(inbox.counts()) <= {"sent", "skipped"})
    finally:
        stop.set()
        thread.join(30)
        collector.server.shutdown()
    uids = [str(d.SOPInstanceUID) for d in collector.received]
    assert len(uids) == len(set(uids)) == 6 + 4  # a report per screenable film, an overlay per scored one, once
    entries = worklist(tmp_path / "inbox")
    probabilities = [e["probability"] for e in entries if e["probability"] is not None]
    assert probabilities == sorted(probabilities, reverse=True) and len(entries) == 3
    assert all(e["seconds_to_result"] is not None for e in entries)
    assert any(e["not_scored"] for e in entries)
    assert main(["worklist", str(tmp_path / "inbox")]) == 0


def reported_probabilities(datasets) -> dict[str, float | None]:
    """Each report's source instance UID -> the probability of PNEUMONIA it states (None: not screened)."""
    found = {}
    for sr in datasets:
        group = highdicom.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()[0]
        source = group.source_images[0].referenced_sop_instance_uid
        found[source] = next((m.value for m in group.get_measurements() if m.name.meaning.endswith("PNEUMONIA")), None)
    return found


@pytest.mark.parametrize("results_by", ["C-STORE", "STOW-RS"])
def test_the_whole_loop_through_orthanc(lung_model, tmp_path, results_by):
    """A modality sends films to Orthanc, Orthanc forwards them to the node, and the node's reports and overlays
    arrive back in Orthanc (by C-STORE, with presentation states, or by STOW-RS to its DICOMweb plugin) in the
    same studies, with pneumoscan predict's probabilities."""
    import io

    import pydicom

    node_port = free_port()
    try:
        orthanc = start_orthanc(node_port)
    except RuntimeError as err:
        pytest.skip(f"Orthanc could not be started: {err}")
    if results_by == "STOW-RS" and "dicom-web" not in orthanc.get("/plugins"):
        orthanc.stop()
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian: orthanc-dicomweb)")
    send_to = f"127.0.0.1:{orthanc.dicom_port}:ORTHANC" if results_by == "C-STORE" else f"{orthanc.url}/dicom-web"
    gsps = results_by == "C-STORE"
    made = films(tmp_path / "films")
    thread, stop, _ = start_node(lung_model, tmp_path / "inbox", send_to, node_port, gsps=gsps)
    try:
        assert set(send_files(list(made.values()), orthanc.dicom_port, ae_title="ORTHANC")) == {0}
        inbox = Inbox(tmp_path / "inbox")
        wait_for(lambda: sum(inbox.counts().values()) == len(made)
                 and set(inbox.counts()) <= {"sent", "skipped"}, seconds=120)
        results = 6 + 4 + (4 if gsps else 0)  # a report per screenable film; an overlay (and a GSPS) per scored one
        wait_for(lambda: len(orthanc.get("/instances")) == len(made) + results, seconds=60)
        studies = {orthanc.get(f"/studies/{s}")["MainDicomTags"]["StudyInstanceUID"]: s
                   for s in orthanc.get("/studies")}
        returned = []
        for study_uid, study in studies.items():
            for series in orthanc.get(f"/studies/{study}/series"):
                if series["MainDicomTags"].get("Manufacturer") == "pneumoscan" or \
                        "pneumoscan" in series["MainDicomTags"].get("SeriesDescription", ""):
                    for instance in series["Instances"]:
                        dataset = pydicom.dcmread(io.BytesIO(orthanc.file(instance)))
                        assert dataset.StudyInstanceUID == study_uid
                        returned.append(dataset)
    finally:
        stop.set()
        thread.join(30)
        orthanc.stop()
    reports = [d for d in returned if d.Modality == "SR"]
    assert len(reports) == 6 and len(returned) == results
    sources = {str(pydicom.dcmread(path).SOPInstanceUID) for path in made.values()}
    states = [d for d in returned if d.Modality == "PR"]
    assert len(states) == (4 if gsps else 0)
    assert all(s.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID in sources
               for s in states)
    screenable = ["plain", "jpeg2000", "rle", "second", "lateral", "broken"]
    assert main(["predict", str(lung_model), *[str(made[n]) for n in screenable], "--out",
                 str(tmp_path / "p.csv")]) == 1  # 1: a file was unreadable (the broken one)
    predicted = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "p.csv").open())}
    reported = reported_probabilities(reports)
    for name in screenable:
        row, uid = predicted[f"{name}.dcm"], str(pydicom.dcmread(made[name]).SOPInstanceUID)
        expected = float(row["p_PNEUMONIA"]) if row["status"] == "scored" else None
        assert reported[uid] == (pytest.approx(expected, abs=1e-5) if expected is not None else None)


def test_a_screening_lost_before_its_results_were_made_is_screened_again(lung_model, tmp_path):
    import pydicom

    from pneumoscan.inference.screen import load
    from pneumoscan.node.inbox import Received
    from pneumoscan.node.maker import ResultMaker
    from pneumoscan.node.network import Peer, make_waiting_results, send_screened
    from pneumoscan.node.screening import screen_waiting

    made = films(tmp_path / "films")
    inbox, screener = Inbox(tmp_path / "inbox"), load(lung_model)
    source = pydicom.dcmread(made["plain"])
    uid = str(source.SOPInstanceUID)
    assert inbox.receive(Received(uid, str(source.SOPClassUID), patient_id="P"), made["plain"].read_bytes())
    assert not inbox.receive(Received(uid, str(source.SOPClassUID)), made["plain"].read_bytes())  # kept once
    assert screen_waiting(inbox, screener) == 1 and inbox.counts() == {"screened": 1}
    (inbox.results_folder(uid) / "screening.json").unlink()  # a crash before the disk had it
    make_waiting_results(inbox, ResultMaker(screener.description, "test"))
    assert inbox.counts() == {"received": 1}
    screen_waiting(inbox, screener)
    make_waiting_results(inbox, ResultMaker(screener.description, "test"))
    assert [Path(r).name for r in inbox.rows()[0]["results"].split("\n")] == ["sr.dcm", "sc.dcm"]
    (inbox.results_folder(uid) / "sc.dcm").write_bytes(b"")  # made, then lost before the disk had it
    assert send_screened(inbox, Peer("127.0.0.1", free_port(), "NOBODY"), "PNEUMOSCAN") == (0, 0)  # not sent
    assert inbox.counts() == {"received": 1}  # screened again
