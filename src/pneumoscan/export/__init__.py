"""Stage 7 of the pipeline: exported files that predict and explain without PyTorch (``files``), each with
the model card (``card``) written from the model's description."""
