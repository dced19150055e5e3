"""Stage 1 of the pipeline: reading images and datasets, splitting by patient, preprocessing."""

from pneumoscan.data.dataset import XRayDataset, stack_inputs
from pneumoscan.data.io import ImageLoadError, load_image
from pneumoscan.data.labels import CLASSES, label_index
from pneumoscan.data.preprocess import Augmentation, Preprocessing, augment
from pneumoscan.data.records import (
                                     Sample,
                                     class_counts,
                                     expand_inputs,
                                     find_images,
                                     find_unreadable,
                                     load_samples,
                                     read_label_csv,
                                     scan_kaggle_split,
)
from pneumoscan.data.split import (
                                     check_patients_disjoint,
                                     describe_split,
                                     evenly_spaced,
                                     patient_id,
                                     patient_split,
                                     read_split,
                                     write_split,
)

__all__ = [
    "CLASSES", "Augmentation", "ImageLoadError", "Preprocessing", "Sample", "XRayDataset", "augment",
    "check_patients_disjoint", "class_counts", "expand_inputs", "describe_split", "evenly_spaced", "find_images",
    "find_unreadable", "label_index", "load_image", "load_samples", "patient_id", "patient_split",
    "read_label_csv", "read_split", "scan_kaggle_split", "stack_inputs", "write_split",
]
