"""Ablation sweeps: grids (data) -> Ray Tune trials -> MLflow parent/child runs.

Entry point: ``python tune/run_ablation.py --grid table3``. No training logic
lives here; each trial calls :func:`oimnet.engine.trainer.train_run`.
"""
