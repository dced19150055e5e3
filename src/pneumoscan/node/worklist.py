"""Triage: the studies in a node's inbox ordered by urgency (the highest screened probability first), refused
and flagged ones marked, with the time from arrival to result. ``pneumoscan worklist INBOX`` prints it and the
server's ``GET /v1/worklist`` returns it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pneumoscan.node.inbox import RECEIVED, SCREENED, SENT, SKIPPED, Inbox


def worklist(inbox: str | Path | Inbox) -> list[dict]:
    """One entry per study, most urgent first: screened studies by their highest probability, then studies with
    nothing scored, then those still waiting."""
    inbox = inbox if isinstance(inbox, Inbox) else Inbox(inbox)
    studies: dict[str, list] = defaultdict(list)
    for row in inbox.rows():
        studies[row["study_instance_uid"] or row["sop_instance_uid"]].append(row)
    entries = [study_entry(uid, rows) for uid, rows in studies.items()]
    return sorted(entries, key=lambda e: (e["status"] == "waiting", e["probability"] is None,
                                          -(e["probability"] or 0.0), e["received_at"]))


def study_entry(uid: str, rows: list) -> dict:
    """What the worklist says about one study."""
    scored = [r for r in rows if r["state"] in (SCREENED, SENT) and r["probability"] is not None]
    top = max(scored, key=lambda r: r["probability"]) if scored else None
    not_scored = [r for r in rows if r["state"] == SKIPPED or (r["state"] in (SCREENED, SENT) and r["reason"])]
    waiting = [r for r in rows if r["state"] == RECEIVED]
    done = [r["screened_at"] for r in rows if r["screened_at"]]
    received_at = min(r["received_at"] for r in rows)
    first = rows[0]
    return {
        "study_instance_uid": uid, "patient_id": first["patient_id"], "patient_name": first["patient_name"],
        "accession_number": first["accession_number"], "instances": len(rows), "received_at": received_at,
        "probability": top["probability"] if top else None, "label": top["label"] if top else "",
        "flagged": any(r["flagged"] for r in rows), "warning": next((r["warning"] for r in rows if r["flagged"]), ""),
        "not_scored": [{"sop_instance_uid": r["sop_instance_uid"], "reason": r["reason"]} for r in not_scored],
        "status": "waiting" if waiting else ("sent" if all(r["state"] in (SENT, SKIPPED) for r in rows)
                                             else "screened"),
        "seconds_to_result": round(max(done) - received_at, 3) if done and not waiting else None,
    }


def format_worklist(entries: list[dict]) -> str:
    """The worklist as a table for a terminal."""
    lines = [f"{'#':>3}  {'probability':>11}  {'label':<12} {'patient':<14} {'accession':<12} {'images':>6}  "
             f"{'to result':>9}  status / notes"]
    for i, e in enumerate(entries, 1):
        probability = f"{e['probability']:.3f}" if e["probability"] is not None else "-"
        seconds = f"{e['seconds_to_result']:.1f} s" if e["seconds_to_result"] is not None else "-"
        notes = [e["status"]] + (["FLAGGED: " + e["warning"]] if e["flagged"] else [])
        notes += [f"not scored: {n['reason']}" for n in e["not_scored"][:2]]
        lines.append(f"{i:>3}  {probability:>11}  {e['label'] or '-':<12} {e['patient_id'][:14]:<14} "
                     f"{(e['accession_number'] or '-')[:12]:<12} {e['instances']:>6}  {seconds:>9}  {'; '.join(notes)}")
    return "\n".join(lines)
