"""Stage 3 of the pipeline: two-stage training on cached frozen-trunk activations."""

from pneumoscan.train.config import STAGES, TrainConfig
from pneumoscan.train.run import train

__all__ = ["STAGES", "TrainConfig", "train"]
