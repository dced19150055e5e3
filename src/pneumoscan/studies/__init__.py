"""Studies over many runs: models compared under one protocol with paired tests (``compare``), and
hyperparameter search on validation with Optuna (``tune``), each with its report."""
