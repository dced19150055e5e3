"""A finished model at work: the serving graph (``graph``, with its closed-form ``heatmaps``), the engines
that run it (``runtime``: PyTorch, onnxruntime, OpenVINO), the one decision every entry point takes
(``screen``), the results table (``predict``) and scoring on a Ray cluster (``ray_scoring``)."""
