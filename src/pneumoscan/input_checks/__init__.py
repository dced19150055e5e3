"""What every model checks about its input before it answers: the checks themselves (``checks``: refuse
what is not the model's modality, flag what is unlike its training population), how a run fits them
(``fitting``), and the made images of other kinds they learn to refuse (``not_xray``)."""
