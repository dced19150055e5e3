"""Anatomy: a lung segmentation model (``segmenter``: a MONAI U-Net), trained on human lung masks
(``masks``: children's and adults' films) by ``training``, and scored with MONAI's Dice and
Hausdorff 95 (``scores``)."""
