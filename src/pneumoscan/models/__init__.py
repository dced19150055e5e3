"""Stage 2 of the pipeline: the networks (``networks``), and what makes a trained one usable anywhere: its
description (``description``: task, classes, words, threshold, checks, metrics) and its self-describing
checkpoint (``checkpoint``)."""
