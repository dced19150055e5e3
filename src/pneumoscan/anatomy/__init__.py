"""Anatomy: a lung segmentation model (``segmenter``: a MONAI U-Net), trained on human lung masks
(``masks``: Kermany children and ieee8023 adults) by ``training``, and scored with MONAI's Dice and
Hausdorff 95 (``scores``)."""
