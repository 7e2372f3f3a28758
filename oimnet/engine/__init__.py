"""Training loop, checkpoints, reproducibility records and MLflow tracking."""
