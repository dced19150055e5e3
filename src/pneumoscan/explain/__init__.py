"""Stage 5 of the pipeline: heatmaps that explain a prediction, and checks that they mean something."""

from pneumoscan.explain.gradcam import TARGETS, Explanation, gradcam
from pneumoscan.explain.methods import METHODS, explain, heatmap_agreement

__all__ = ["METHODS", "TARGETS", "Explanation", "explain", "gradcam", "heatmap_agreement"]
