"""Reading sweeps back from MLflow: tables (markdown / LaTeX / CSV) and plots."""
