"""The datasets pneumoscan knows by their class folders, and the words a model trained on them describes
itself with (``data.tasks``): the Kermany pediatric chest X-rays (NORMAL vs PNEUMONIA, the default task)
and the Kaggle Brain Tumor MRI set (four classes, or tumour vs no tumour).

With ``data.labels`` (the default task's class order), ``data.samples`` (Kermany file names' patients) and
``data.synthetic`` (the default task's phantoms), this is where they are named; every other module takes its
words from a model's description.
"""

from __future__ import annotations

from pneumoscan.data.labels import DEFAULT_TASK, ClassMap
from pneumoscan.data.tasks import TaskSettings

KERMANY_WORDS = TaskSettings(
    name="NORMAL vs PNEUMONIA on pediatric chest X-rays",
    modality="chest X-ray",
    population="pediatric chest X-rays (children aged 1 to 5) from one hospital in Guangzhou (Kermany et al. 2018)",
    intended_use="Research and education: screening support that flags chest X-rays likely to show pneumonia, "
                 "with a heatmap of the evidence. Not a medical device; not for diagnosis without a radiologist "
                 "reading the image.",
    display=("NORMAL=no pneumonia", "PNEUMONIA=pneumonia"),
    limitations=(
        "Trained on one pediatric dataset (Kermany et al. 2018: children aged 1-5, one hospital in Guangzhou); "
        "performance on adults, other hospitals and other devices is unknown.",
        "The official test split was acquired differently from train: expect a drop on new data and re-check "
        "the threshold locally before any use.",
        "NORMAL vs PNEUMONIA only: other findings are not detected, and bacterial vs viral is not told apart.",
        "Heatmaps show where the model's evidence lies, not the lesion's extent; they can highlight markers or "
        "borders.",
    ),
)

BRAIN_MRI_FOLDERS = ("glioma", "meningioma", "notumor", "pituitary")
BRAIN_MRI_WORDS = TaskSettings(
    modality="brain MRI",
    population="brain MRI slices of the Kaggle Brain Tumor MRI dataset (figshare, SARTAJ and Br35H)",
    intended_use="Research and education: decision support that sorts brain MRI slices by tumour type, with a "
                 "heatmap of the evidence. Not a medical device; a radiologist must read every study.",
    limitations=(
        "Trained on 2D slices of one public collection whose classes come partly from different sources: the model "
        "can learn the source rather than the tumour; performance on other scanners and protocols is unknown.",
        "The collection's official splits share duplicate and near-duplicate images; results on its test split "
        "are optimistic unless duplicates are removed.",
        "Heatmaps show where the model's evidence lies, not a tumour's extent.",
    ),
)
BRAIN_MRI_DISPLAY = {"glioma": "glioma", "meningioma": "meningioma", "notumor": "no tumour",
                     "pituitary": "pituitary tumour"}


def known_task(classes: ClassMap) -> TaskSettings | None:
    """The words of a known dataset whose class folders (or labels) ``classes`` maps, else None."""
    sources = {s.lower() for s in classes.sources} or {n.lower() for n in classes.names}
    if classes == DEFAULT_TASK:
        return KERMANY_WORDS
    if sources == set(BRAIN_MRI_FOLDERS):
        return _brain_mri(classes)
    return None


def _brain_mri(classes: ClassMap) -> TaskSettings:
    """Brain MRI words for the four types, or for any merge of them (tumour vs no tumour)."""
    by_class = {name: [s for s, i in classes.sources.items() if i == index] or [name]
                for index, name in enumerate(classes.names)}
    display = {name: " or ".join(BRAIN_MRI_DISPLAY.get(s.lower(), s) for s in members)
               for name, members in by_class.items()}
    tumour_classes = [name for name, members in by_class.items() if "notumor" not in [m.lower() for m in members]]
    if len(tumour_classes) == 1 and len(by_class[tumour_classes[0]]) > 1:
        display[tumour_classes[0]] = "tumour"
    name = " vs ".join(display.values()) + " on brain MRI"
    return TaskSettings(name=name, modality=BRAIN_MRI_WORDS.modality, population=BRAIN_MRI_WORDS.population,
                        intended_use=BRAIN_MRI_WORDS.intended_use, limitations=BRAIN_MRI_WORDS.limitations,
                        display=tuple(f"{k}={v}" for k, v in display.items()))
