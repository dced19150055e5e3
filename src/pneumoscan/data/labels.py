"""The class order, defined once: 0 = NORMAL, 1 = PNEUMONIA. Everything else reads it from here."""

CLASSES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
POSITIVE = 1  # index of the positive class (the single logit is the PNEUMONIA logit)


def label_index(value: str | int) -> int:
    """Turn a class name ("NORMAL", "pneumonia") or index ("0", 1) into the class index."""
    text = str(value).strip()
    upper = text.upper()
    if upper in CLASSES:
        return CLASSES.index(upper)
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"unknown label {value!r}: use one of {list(CLASSES)} or 0/1")
