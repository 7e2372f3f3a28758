# Two commands on a fresh clone:
#   make run    set up, then run the main job (table3 ablation, synthetic data, smoke profile)
#   make test   set up, ruff lint + format check, then run the test suite
.PHONY: setup run test bench mlflow-ui clean

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/python tune/run_ablation.py --grid table3

test:
	bash scripts/test.sh

bench: setup
	.venv/bin/python benchmarks/run.py

mlflow-ui: setup
	.venv/bin/python -m mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlruns/mlflow.db" --host 127.0.0.1 --port 5000

clean:
	rm -rf .venv output data/synthetic-* mlruns ray_results
