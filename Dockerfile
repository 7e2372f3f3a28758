# GPU image: installs this package on an official PyTorch CUDA runtime image and
# runs the README's main command (the table3 ablation; the smoke profile on the
# synthetic set unless you pass other arguments). Not built in this project's CI
# (no container registry there).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /workspace/oimnet
COPY pyproject.toml README.md ./
COPY oimnet ./oimnet
RUN pip install --no-cache-dir -e ".[test]"
COPY . .
ENV MLFLOW_TRACKING_URI=sqlite:////workspace/oimnet/mlruns/mlflow.db
ENTRYPOINT ["python", "tune/run_ablation.py"]
CMD ["--grid", "table3"]
