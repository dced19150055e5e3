"""The DICOM node's inbox: every instance a PACS sends is a file on disk and a row in SQLite before the sender
hears success, and the rows are the queue the node screens from, the record of what it could not screen, and
the worklist.

A row goes ``received`` -> ``screened`` (the screening kept, then its results made, under ``results/``) ->
``sent``, or ``received`` -> ``skipped`` (with the reason: a CT slice, a report...). Received files are synced
to the disk before the row is committed; kept screenings and results are not (one a crash lost is screened
again: ``make_again``). Each step is one transaction, so a node killed anywhere resumes where it stopped: an
instance screened but not recorded is screened again (its results carry the same UIDs, so a PACS stores them
once), a result sent but not recorded is sent again under the same UIDs. An instance received twice is kept
once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RECEIVED, SCREENED, SENT, SKIPPED = "received", "screened", "sent", "skipped"

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT, study_instance_uid TEXT, series_instance_uid TEXT, patient_id TEXT, patient_name TEXT,
    accession_number TEXT, modality TEXT, view_position TEXT, calling_ae TEXT, transfer_syntax TEXT,
    path TEXT NOT NULL, received_at REAL NOT NULL,
    state TEXT NOT NULL, reason TEXT DEFAULT '',
    label TEXT DEFAULT '', probability REAL, flagged INTEGER DEFAULT 0, warning TEXT DEFAULT '',
    results TEXT DEFAULT '', screened_at REAL, sent_at REAL, send_attempts INTEGER DEFAULT 0, send_error TEXT DEFAULT ''
);
CREATE INDEX IF NOT EXISTS by_state ON instances(state, received_at);
"""


@dataclass(frozen=True)
class Received:
    """What the inbox keeps of one received instance besides its file."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    accession_number: str = ""
    modality: str = ""
    view_position: str = ""
    calling_ae: str = ""
    transfer_syntax: str = ""


class Inbox:
    """A folder: ``instances/`` (what was received), ``results/`` (what the node made) and ``inbox.sqlite``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "instances").mkdir(parents=True, exist_ok=True)
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        self.path = self.root / "inbox.sqlite"
        self._local = threading.local()
        with self._connection() as db:
            db.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (the receiving threads and the screening loop each have one)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def instance_path(self, sop_instance_uid: str) -> Path:
        return self.root / "instances" / f"{safe_name(sop_instance_uid)}.dcm"

    def results_folder(self, sop_instance_uid: str) -> Path:
        return self.root / "results" / safe_name(sop_instance_uid)

    def receive(self, received: Received, encoded: bytes) -> bool:
        """Keep one instance: its file written and synced, then its row committed. False when it was here already
        (the file is not written again)."""
        db = self._connection()
        if db.execute("SELECT 1 FROM instances WHERE sop_instance_uid = ?", (received.sop_instance_uid,)).fetchone():
            return False
        path = self.instance_path(received.sop_instance_uid)
        durable_write(path, encoded)
        fields = vars(received) | {"path": str(path.relative_to(self.root)), "received_at": time.time(),
                                   "state": RECEIVED}
        columns = ", ".join(fields)
        cursor = db.execute(f"INSERT OR IGNORE INTO instances ({columns}) VALUES ({', '.join('?' * len(fields))})",
                            tuple(fields.values()))
        return cursor.rowcount == 1

    def waiting(self, limit: int) -> list[sqlite3.Row]:
        """The oldest instances received and not yet screened or skipped."""
        return self._connection().execute("SELECT * FROM instances WHERE state = ? ORDER BY received_at LIMIT ?",
                                          (RECEIVED, limit)).fetchall()

    def unsent(self, limit: int) -> list[sqlite3.Row]:
        """Screened instances whose results are made and have not reached the PACS yet."""
        return self._connection().execute("SELECT * FROM instances WHERE state = ? AND results != '' "
                                          "ORDER BY screened_at LIMIT ?", (SCREENED, limit)).fetchall()

    def skip(self, sop_instance_uid: str, reason: str) -> None:
        """Record that an instance is not screened, and why (it stays in ``instances/``)."""
        self._connection().execute("UPDATE instances SET state = ?, reason = ?, screened_at = ? "
                                   "WHERE sop_instance_uid = ? AND state = ?",
                                   (SKIPPED, reason, time.time(), sop_instance_uid, RECEIVED))

    def screened(self, sop_instance_uid: str, *, label: str, probability: float | None, flagged: bool, warning: str,
                 reason: str, results: list[str]) -> None:
        """Record a screening and the result files written for it (relative to the inbox)."""
        self._connection().execute(
            "UPDATE instances SET state = ?, label = ?, probability = ?, flagged = ?, warning = ?, reason = ?, "
            "results = ?, screened_at = ? WHERE sop_instance_uid = ? AND state = ?",
            (SCREENED, label, probability, int(flagged), warning, reason, "\n".join(results), time.time(),
             sop_instance_uid, RECEIVED))

    def sent(self, sop_instance_uids: list[str]) -> None:
        """Record that these instances' results were stored by the PACS (one transaction)."""
        db, now = self._connection(), time.time()
        db.execute("BEGIN")
        try:
            db.executemany("UPDATE instances SET state = ?, sent_at = ?, send_attempts = send_attempts + 1, "
                           "send_error = '' WHERE sop_instance_uid = ?",
                           [(SENT, now, uid) for uid in sop_instance_uids])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def unmade(self, limit: int) -> list[sqlite3.Row]:
        """Screened instances whose report and overlay are not made yet."""
        return self._connection().execute("SELECT * FROM instances WHERE state = ? AND results = '' "
                                          "ORDER BY screened_at LIMIT ?", (SCREENED, limit)).fetchall()

    def made(self, sop_instance_uid: str, results: list[str]) -> None:
        """Record the result files made for a screened instance (relative to the inbox)."""
        self._connection().execute("UPDATE instances SET results = ? WHERE sop_instance_uid = ?",
                                   ("\n".join(results), sop_instance_uid))

    def give_up(self, sop_instance_uid: str, reason: str) -> None:
        """A screened instance whose results cannot be made: recorded with the reason, never sent."""
        self._connection().execute("UPDATE instances SET state = ?, reason = ? WHERE sop_instance_uid = ?",
                                   (SKIPPED, reason, sop_instance_uid))

    def make_again(self, sop_instance_uid: str, problem: str) -> None:
        """Send a screened instance back to the queue: its result files were lost (a crash before the disk had
        them); it is screened again, its results carrying the same UIDs."""
        self._connection().execute("UPDATE instances SET state = ?, send_error = ? WHERE sop_instance_uid = ? "
                                   "AND state = ?", (RECEIVED, problem, sop_instance_uid, SCREENED))

    def send_failed(self, sop_instance_uid: str, error: str) -> None:
        self._connection().execute("UPDATE instances SET send_attempts = send_attempts + 1, send_error = ? "
                                   "WHERE sop_instance_uid = ?", (error, sop_instance_uid))

    def rows(self) -> list[sqlite3.Row]:
        """Every instance, oldest first."""
        return self._connection().execute("SELECT * FROM instances ORDER BY received_at").fetchall()

    def counts(self) -> dict[str, int]:
        """How many instances are in each state."""
        return {row["state"]: row["n"] for row in
                self._connection().execute("SELECT state, COUNT(*) AS n FROM instances GROUP BY state")}


def safe_name(uid: str) -> str:
    """A UID as a file name (UIDs are digits and dots; anything else a sender put there is replaced)."""
    return "".join(c if c.isdigit() or c == "." else "_" for c in uid)[:128] or "_"


def durable_write(path: Path, data: bytes) -> None:
    """Write, flush to the disk, then rename: after a crash the file is either whole or absent."""
    replaced_write(path, data, sync=True)


def replaced_write(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write to a temporary name, then rename: a reader sees the whole file or none (``sync``: on the disk too)."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
