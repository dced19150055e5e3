"""The lung segmenter as ONNX, checked against PyTorch: the graph takes grey films ``[B, 1, S, S]`` in [0, 1]
and gives P(lung) per pixel; its settings and facts travel in the file's metadata. An export whose
probabilities or masks differ from PyTorch's beyond float noise is deleted, not kept."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pneumoscan.anatomy.segmenter import LungSegmenter

METADATA_KEY = "pneumoscan_segmenter"
PARITY_LIMITS = {"prob_max_abs_diff": 1e-3, "mask_pixels_differing": 1e-3}


class _Probabilities(torch.nn.Module):
    def __init__(self, segmenter: LungSegmenter):
        super().__init__()
        self.net = segmenter.net

    def forward(self, films: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(films))[:, 0]


def export_segmenter(segmenter: LungSegmenter, path: str | Path, parity_films: list[np.ndarray]) -> dict:
    """Write ``path`` (ONNX, dynamic batch) and check it on ``parity_films`` (grey floats); returns the parity."""
    import onnx

    path = Path(path)
    side = segmenter.settings.image_size
    graph = _Probabilities(segmenter).eval()
    torch.onnx.export(graph, (torch.zeros(2, 1, side, side),), str(path), input_names=["films"],
                      output_names=["lung_probability"], dynamic_shapes={"films": {0: torch.export.Dim("batch")}},
                      dynamo=True, external_data=False, verbose=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps({"settings": asdict(segmenter.settings), "facts": segmenter.facts})
    onnx.save(proto, str(path))
    parity = parity_of(segmenter, path, parity_films)
    over = [f"{k} {parity[k]:.3g} > {limit:g}" for k, limit in PARITY_LIMITS.items() if parity[k] > limit]
    if over:
        path.unlink()
        raise ValueError(f"the exported segmenter differs from PyTorch on {parity['films']} films: {', '.join(over)}")
    return parity


def parity_of(segmenter: LungSegmenter, path: Path, films: list[np.ndarray]) -> dict:
    """Largest probability difference, and the share of mask pixels (at 0.5) that differ."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = segmenter.inputs(films).numpy()
    exported = session.run(["lung_probability"], {"films": inputs})[0]
    reference = segmenter.probabilities(films)
    return {"films": len(films), "prob_max_abs_diff": float(np.abs(exported - reference).max()) if films else 0.0,
            "mask_pixels_differing": float(((exported >= 0.5) != (reference >= 0.5)).mean()) if films else 0.0}
