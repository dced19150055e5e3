"""The classes of a task: their names in index order, and which folder names or CSV labels map to them.

Class names come from the data: the class folders of a ``ROOT/<split>/<class>/`` tree, or the label
column of a CSV, sorted by name (Kermany: 0 = NORMAL, 1 = PNEUMONIA). A mapping such as
``"notumor=0,glioma=1,meningioma=1,pituitary=1"`` merges folders into classes (a merged class is named
by its members joined with "+", or give names: ``"notumor=no tumour,glioma=tumour,..."``). With two
classes, index 1 is the positive class (the model's single logit); with more, each has a logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLASSES: tuple[str, str] = ("NORMAL", "PNEUMONIA")  # the default task's classes (Kermany chest X-rays)
POSITIVE = 1  # with two classes, the index of the positive class (the single logit's)


@dataclass(frozen=True)
class ClassMap:
    """Class names by index, and the source names (folders, CSV labels) that map to each index."""

    names: tuple[str, ...]
    sources: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.names) < 2:
            raise ValueError(f"a task needs at least two classes, found {list(self.names)}")

    @property
    def binary(self) -> bool:
        return len(self.names) == 2

    @property
    def outputs(self) -> int:
        """The model's logits: one for two classes, one per class otherwise."""
        return 1 if self.binary else len(self.names)

    def index(self, value: str | int) -> int:
        """The class index of a folder name, CSV label, class name or index ("1")."""
        text = str(value).strip()
        for table in (self.sources, {n: i for i, n in enumerate(self.names)}):
            matches = {k.lower(): v for k, v in table.items()}
            if text.lower() in matches:
                return matches[text.lower()]
        if text.isdigit() and int(text) < len(self.names):
            return int(text)
        raise ValueError(f"unknown label {value!r}: use one of {sorted(self.sources) or list(self.names)} "
                         f"or 0..{len(self.names) - 1}")


DEFAULT_TASK = ClassMap(CLASSES, {"NORMAL": 0, "PNEUMONIA": 1})


def class_map(found: list[str], spec: str = "") -> ClassMap:
    """The classes of data whose folders (or CSV labels) are ``found``, merged as ``spec`` says ("" = one
    class per name, sorted)."""
    found = sorted(set(found))
    if not spec:
        if {f.upper() for f in found} <= {"0", "1", *CLASSES}:
            return DEFAULT_TASK  # Kermany labels, by name or 0/1
        return ClassMap(tuple(found), {name: i for i, name in enumerate(found)})
    pairs = [item.split("=", 1) for item in spec.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--classes {spec!r}: write SOURCE=CLASS pairs, e.g. notumor=0,glioma=1")
    mapping = {source.strip(): target.strip() for source, target in pairs}
    unmapped = [f for f in found if f not in mapping]
    if unmapped:
        raise ValueError(f"--classes {spec!r} does not say where {unmapped} go")
    if all(t.isdigit() for t in mapping.values()):
        order = sorted({int(t) for t in mapping.values()})
        if order != list(range(len(order))):
            raise ValueError(f"--classes {spec!r}: class numbers must be 0..N-1, found {order}")
        names = tuple("+".join(s for s, t in mapping.items() if int(t) == i) for i in order)
        return ClassMap(names, {s: int(t) for s, t in mapping.items()})
    names = tuple(dict.fromkeys(mapping.values()))
    return ClassMap(names, {s: names.index(t) for s, t in mapping.items()})


def label_index(value: str | int) -> int:
    """A Kermany label ("NORMAL", "pneumonia", "0", 1) as its class index."""
    return DEFAULT_TASK.index(value)
