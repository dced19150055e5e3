"""Stage 4 of the pipeline: metrics with confidence intervals, threshold choice, plots."""

from pneumoscan.evaluate.metrics import (
                                         THRESHOLD_RULES,
                                         binary_metrics,
                                         bootstrap_ci,
                                         choose_threshold,
                                         confusion_counts,
                                         threshold_interval,
)
from pneumoscan.evaluate.report import (
                                        evaluate_screened,
                                        evaluate_split,
                                        screening_counts,
                                        write_json,
                                        write_plots,
                                        write_predictions,
)

__all__ = ["THRESHOLD_RULES", "binary_metrics", "bootstrap_ci", "choose_threshold", "confusion_counts",
           "evaluate_screened", "evaluate_split", "screening_counts", "threshold_interval", "write_json", "write_plots",
           "write_predictions"]
