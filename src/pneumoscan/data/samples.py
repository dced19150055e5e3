"""One labelled image (``Sample``), and the patient a Kermany file name belongs to.

Kermany names carry the patient: ``person123_bacteria_456.jpeg`` (patient ``person123``),
``IM-0123-0001.jpeg`` (``IM-0123``) and ``NORMAL2-IM-0123-0001.jpeg`` (``NORMAL2-IM-0123``, a
separate numbering). Any other name is its own patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)


@dataclass(frozen=True)
class Sample:
    """One labelled image: its path, class index (see ``labels.CLASSES``) and patient id."""

    path: str
    label: int
    patient: str


def patient_id(file_name: str) -> str:
    """The patient a Kermany file name belongs to; any other name is its own patient (its stem)."""
    stem = Path(file_name).name
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return Path(stem).stem
