"""Run an ablation grid as a Ray Tune sweep, tracked in MLflow.

Examples:
  python tune/run_ablation.py                                  # table3, smoke profile, generated data
  python tune/run_ablation.py --grid table3 --dry-run          # the trial table, nothing runs
  python tune/run_ablation.py --grid eps --seeds 3
  python tune/run_ablation.py --grid table3 --dataset prw --data-root /data/PRW-v16.04.20 \\
      --profile paper --set MODEL.BACKBONE.WEIGHTS=/weights/resnet50.pth
  python tune/run_ablation.py --resume                         # the latest interrupted sweep
  python tune/run_ablation.py --grid table3 --address ray://head:10001   # a running Ray cluster

Each trial is one training run (oimnet.engine.trainer.train_run) on one GPU
(plus CPUs for data loading) when the cluster has GPUs, else on one CPU.
A failed trial is retried from its last epoch checkpoint (up to 2 times).
MLflow: one parent run per sweep, one child run per trial (tags grid, row,
paper_label, seed, dataset, profile, git_commit); store = MLFLOW_TRACKING_URI,
else sqlite:///<project>/mlruns/mlflow.db. At the end the table is printed
(analysis/make_tables.py) and PNGs are written to <sweep folder>/plots.

Exit status: 0 all trials finished, 1 some trial failed, 2 usage / grid
error, 130 interrupted (Ctrl-C) and 143 terminated (SIGTERM; continue
either with --resume). After the driver was killed (kill -9), the next
sweep or --resume under the same --storage ends what is left of the local
Ray cluster it had started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from oimnet.tracking_store import StoreError, prepare_store
from tune import local_ray
from tune.grids import GridError, expand, load_grid, parse_set, resolve_grid_path
from tune.sweep import (
    MAX_FAILURES,
    SweepError,
    SweepState,
    build_tuner,
    check_restorable,
    check_resume_store,
    default_experiment_name,
    end_parent,
    latest_sweep,
    load_trials,
    reopen_parent,
    save_trials,
    search_outcome,
    start_parent,
    sweep_status,
    trial_outcome,
)
from tune.trial_resources import (
    CPU_SECONDS_PER_IMAGE_2CORES,
    TRAIN_IMAGES,
    estimate_cpu_hours,
    format_resources,
    local_cluster_resources,
    plan_trial_resources,
)

DATASETS = ("synthetic", "prw", "cuhk")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SYNTH_ROOT = PROJECT_ROOT / "data" / "synthetic-prw"
DEFAULT_STORAGE = PROJECT_ROOT / "ray_results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tune/run_ablation.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--grid",
        default="table3",
        metavar="NAME|PATH",
        help="a grid of experiments/grids/ (table3, eps, micro) or a YAML file (default: table3)",
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default="synthetic",
        help="synthetic: generated once and cached (default); prw / cuhk need --data-root",
    )
    p.add_argument(
        "--data-root", metavar="DIR", help="dataset folder (default: the base config's / data/synthetic-prw)"
    )
    p.add_argument("--profile", choices=("smoke", "paper"), default="smoke")
    p.add_argument(
        "--seeds", type=int, metavar="N", help="seeds 1..N per row (default: the grid's `seeds`, else 1; table3: 2)"
    )
    p.add_argument(
        "--max-concurrent", type=int, metavar="N", help="at most N trials at once (default: as resources allow)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial (repeatable)"
    )
    p.add_argument(
        "--release-protocol",
        action="store_true",
        help="the authors' protocol: train on every training identity and evaluate the test split every "
        "EVAL_PERIOD (= --set VAL.ENABLED=false); default: tune on a held-out validation split",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the trial table (row, seed, overrides, resources) and exit"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep (--experiment NAME, default the latest); finished trials are not rerun",
    )
    p.add_argument(
        "--workers-per-trial",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel Ray Train workers per trial (SOLVER.WORLD_SIZE; one GPU each, else CPU gloo "
        "workers); N workers train like one process with N x INPUT.BATCH_SIZE_TRAIN (default 1)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        metavar="N",
        help="a searched grid: sample N configurations instead of its search.num_samples",
    )
    p.add_argument("--retry-failed", action="store_true", help="with --resume: also rerun trials that failed")
    p.add_argument("--address", metavar="ADDR", help="a running Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--experiment", metavar="NAME", help="sweep name (default: <grid>-<profile>-<dataset>-<time>)")
    p.add_argument(
        "--storage",
        metavar="DIR",
        default=str(DEFAULT_STORAGE),
        help="where sweeps live (default: <project>/ray_results; on a multi-node cluster a shared path)",
    )
    p.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the local store)"
    )
    p.add_argument(
        "--trial-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable set inside every trial (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="run --profile paper without GPUs anyway")
    return p


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            fail(f"--trial-env {item}: expected KEY=VALUE")
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _data_root(args, grid) -> str:
    if args.data_root:
        return str(Path(args.data_root).expanduser().resolve())
    if args.dataset == "synthetic":
        return str(DEFAULT_SYNTH_ROOT)
    from oimnet.config import load_config

    return str(Path(load_config(str(grid.datasets[args.dataset])).INPUT.DATA_ROOT).resolve())


def synthetic_root(specs: list) -> str:
    """The cached generated world for the trials' INPUT.SYNTH settings.

    The generator keeps an existing folder whatever its settings, so each
    setting gets its own folder: data/synthetic-prw for the defaults,
    data/synthetic-prw-s<seed>-i<ids>-f<frames>-<size> otherwise.
    """
    keys = ("INPUT.SYNTH.SEED", "INPUT.SYNTH.IDENTITIES", "INPUT.SYNTH.FRAMES", "INPUT.SYNTH.SIZE")
    settings = {tuple(s.get(k) for k in keys) for s in specs}
    if len(settings) != 1:
        raise GridError("rows use different INPUT.SYNTH settings; give them one, or run them as separate sweeps")
    seed, ids, frames, size = settings.pop()
    if (seed, ids, frames, size) == (0, 0, 0, ""):
        return str(DEFAULT_SYNTH_ROOT)
    parts = (
        [f"s{seed}"] + ([f"i{ids}"] if ids else []) + ([f"f{frames}"] if frames else []) + ([str(size)] if size else [])
    )
    return f"{DEFAULT_SYNTH_ROOT}-{'-'.join(parts)}"


def print_search(search: dict) -> None:
    sched = search.get("scheduler")
    print(
        f"search: {search['num_samples']} samples of the configuration above, {search['algorithm']} sampling, "
        f"{search['mode']}imising {search['metric']}"
        + (
            f"; ASHA (grace period {sched['grace_period'] or 'EVAL_PERIOD'} epochs, reduction factor "
            f"{sched['reduction_factor']})"
            if sched
            else "; no early stopping"
        )
    )
    for key, dist in search["space"].items():
        kind, args = next(iter(dist.items()))
        print(f"  {key}: {kind}{args}")


def print_trial_table(specs: list, resources: dict, device: str, file=sys.stdout) -> None:
    rows = [("key", "row", "seed", "overrides", "resources")]
    for s in specs:
        ov = " ".join(f"{k}={v}" for k, v in s.overrides.items())
        rows.append((s.key, s.row, str(s.seed), ov, f"{format_resources(resources)} ({device})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=file)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=file)


def _cluster_resources(address: str | None) -> dict:
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


_LOCAL_SESSION: list[str] = []  # session folder of the local Ray this driver started


def _init_ray(address: str | None) -> None:
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ctx = ray.init(include_dashboard=False, log_to_driver=True)
        _LOCAL_SESSION.append(ctx.address_info["session_dir"])
    # Ray's core installs its own SIGTERM handler (it logs and aborts, exit -6): put ours back.
    signal.signal(signal.SIGTERM, _TERMINATED)


class _Terminated:
    """SIGTERM (a scheduler, ``docker stop``) handled like Ctrl-C: passed on to
    whatever handles SIGINT now (Ray Tune's graceful stop during fit, else
    KeyboardInterrupt); ``got`` says it came."""

    def __init__(self):
        self.got = False

    def __call__(self, signum, frame):
        self.got = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not self:
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt


_TERMINATED = _Terminated()


def _count_train_images(dataset: str, root: str) -> int:
    if dataset in TRAIN_IMAGES:
        return TRAIN_IMAGES[dataset]
    try:
        from oimnet.data import load_records

        return len(load_records("synthetic", root, "train"))
    except Exception:
        return 0


def prepare_new(args) -> tuple[SweepState, dict[str, dict], list]:
    """Validate the grid and expand it (no Ray, no MLflow yet)."""
    from oimnet.engine.tracking import resolve_tracking_uri

    grid = load_grid(resolve_grid_path(args.grid))
    n_seeds = grid.seeds if args.seeds is None else args.seeds
    if n_seeds < 1:
        fail(f"--seeds {n_seeds}: expected a positive integer")
    seeds = list(range(1, n_seeds + 1))
    extra = parse_set(args.set)
    if args.workers_per_trial < 1:
        fail(f"--workers-per-trial {args.workers_per_trial}: expected a positive integer")
    if args.workers_per_trial > 1:
        extra["SOLVER.WORLD_SIZE"] = args.workers_per_trial
    if args.release_protocol:
        extra["VAL.ENABLED"] = False
    storage = Path(args.storage).expanduser().resolve()
    name = args.experiment or default_experiment_name(grid.name, args.profile, args.dataset)
    exp_dir = storage / name
    data_root = _data_root(args, grid)
    # Ray is started later; --dry-run must not need it, so the device comes
    # from the local machine unless a cluster address was given.
    address = args.address or os.environ.get("RAY_ADDRESS")
    cluster = None if address else local_cluster_resources()  # a cluster's: read after ray.init
    runtime = {
        "INPUT.DATA_ROOT": data_root,
        "OUTPUT_DIR": lambda s: str(exp_dir / "outputs" / s.key),
        "MLFLOW.RUN_NAME": lambda s: f"{s.row} s{s.seed}",
    }
    if cluster is not None:
        _, device = plan_trial_resources(cluster)
        runtime["DEVICE"] = device
    specs = expand(grid, dataset=args.dataset, profile=args.profile, seeds=seeds, extra=extra, runtime=runtime)
    if args.dataset == "synthetic" and not args.data_root:
        data_root = synthetic_root(specs)
        for s in specs:
            s.set("INPUT.DATA_ROOT", data_root)
    experiments = {s.get("MLFLOW.EXPERIMENT") for s in specs}
    if len(experiments) != 1:
        raise GridError(
            f"{grid.path}: rows set different MLFLOW.EXPERIMENT values ({', '.join(sorted(experiments))}); "
            f"a sweep's runs live in one MLflow experiment"
        )
    if args.num_samples is not None:
        if grid.search is None:
            raise GridError(f"--num-samples: {grid.path.name} has no search: section (a grid runs every row)")
        if args.num_samples < 1:
            raise GridError(f"--num-samples {args.num_samples}: expected a positive integer")
        grid.search.num_samples = args.num_samples
    if grid.search is not None:
        check_search(grid, specs)
    workers = max(int(s.get("INPUT.NUM_WORKERS_TRAIN")) for s in specs)
    resources, device = plan_trial_resources(cluster or {"CPU": 1}, workers)
    state = SweepState(
        experiment=name,
        exp_dir=str(exp_dir),
        tracking_uri=resolve_tracking_uri(args.tracking_uri),
        mlflow_experiment=experiments.pop(),
        grid=grid.name,
        grid_file=str(grid.path),
        profile=args.profile,
        dataset=args.dataset,
        seeds=seeds,
        resources=resources,
        device=device,
        env=_env_pairs(args.trial_env),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        search=grid.search.to_dict() if grid.search else None,
    )
    return state, {"grid": grid, "cluster": cluster, "data_root": data_root}, specs


def check_search(grid, specs: list) -> None:
    """A searched grid: one base configuration, one seed, searched keys and ASHA settings valid for it."""
    from tune.search import SearchError, check_against_config

    shown = grid.path.name
    if len(specs) != 1:
        rows = sorted({s.row for s in specs})
        seeds = sorted({s.seed for s in specs})
        if len(seeds) > 1:
            raise GridError(
                f"{shown}: a searched grid trains each sampled configuration once (seed 1); "
                f"drop --seeds {len(seeds)} (rerun the best configuration with seeds as a plain grid)"
            )
        raise GridError(
            f"{shown}: search: the rows and axes expand to {len(rows)} configurations "
            f"({', '.join(rows)}); a search starts from exactly one"
        )
    try:
        check_against_config(grid.search, specs[0].config, f"{shown}: search")
    except SearchError as e:
        raise GridError(str(e)) from None


def _tags(state: SweepState, spec) -> dict[str, str]:
    from oimnet.engine.tracking import git_commit

    return {
        "sweep": state.experiment,
        "grid": state.grid,
        "row": spec.row,
        "row_index": str(spec.row_index),
        "paper_label": spec.paper_label,
        "seed": str(spec.seed),
        "dataset": state.dataset,
        "profile": state.profile,
        "git_commit": git_commit(),
        "trial": spec.key,
    }


def _finalize_specs(state: SweepState, specs: list, resources: dict, device: str) -> dict[str, dict]:
    out = {}
    for s in specs:
        s.set("DEVICE", device)
        d = s.to_dict()
        d["tags"] = _tags(state, s)
        out[s.key] = d
    state.resources, state.device = resources, device
    return out


def report(state: SweepState, outcome: dict | None, elapsed: float) -> list[Path]:
    """Print the table, the MLflow UI command and where the plots went; return files for the parent run."""
    from analysis.make_tables import make_table

    files: list[Path] = []
    exp_dir = Path(state.exp_dir)
    try:
        text, plots = make_table(
            parent_ids=[state.parent_run_id], tracking_uri=state.tracking_uri, plots_dir=exp_dir / "plots"
        )
        table = exp_dir / "table.md"
        table.write_text(text)
        files = [table, *plots]
        print("\n" + text)
        if not state.search:
            print(
                "(how to read it: README.md, 'How to read the cells': a cell is mean ± std [95 % interval] over "
                "seeds; Δ is the paired difference from OIMNet over the same seeds, p its paired t-test)"
            )
        if state.search:
            from tune.search import Search
            from tune.search_report import best_and_plot

            best, search_plots = best_and_plot(
                state.tracking_uri, state.parent_run_id, Search.from_dict(state.search), exp_dir / "plots"
            )
            (exp_dir / "best.txt").write_text(best + "\n")
            files += [exp_dir / "best.txt", *search_plots]
            plots = [*plots, *search_plots]
            print(best)
    except ValueError as e:
        print(f"(no table: {e})")
        plots = []
    if outcome:
        print(
            f"trials: {len(outcome['finished'])} finished, {len(outcome['errored'])} failed, "
            f"{len(outcome['unfinished'])} unfinished; wall time {elapsed / 60:.1f} min"
        )
    print(f"sweep folder: {state.exp_dir}")
    if plots:
        print(f"plots: {exp_dir / 'plots'} ({', '.join(p.name for p in plots)})")
    print(f"MLflow: experiment '{state.mlflow_experiment}', parent run {state.parent_run_id}")
    if state.tracking_uri.startswith(("sqlite:", "file:")):
        print(
            f"  browse: mlflow ui --backend-store-uri {state.tracking_uri} --host 127.0.0.1 --port 5000"
            f"  (then select the parent's child runs and press Compare)"
        )
    else:
        print(f"  browse: {state.tracking_uri}")
    return files


def main(argv: list[str] | None = None, hook_factories: tuple = ()) -> int:
    """The command line; ``hook_factories`` (callables returning training hooks)
    go to every trial, for programs that start a sweep from Python (tests)."""
    args = build_parser().parse_args(argv)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        fail(f"--max-concurrent {args.max_concurrent}: expected a positive integer")
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    t_start = time.time()
    terminated = _TERMINATED
    signal.signal(signal.SIGTERM, terminated)
    try:
        return _main(args, address, t_start, terminated, hook_factories)
    except KeyboardInterrupt:  # before the sweep started: nothing to mark
        print("\ninterrupted before the sweep started", file=sys.stderr)
        return 143 if terminated.got else 130


def _main(args, address, t_start, terminated, hook_factories: tuple) -> int:
    if not args.dry_run:
        local_ray.end_dead_clusters(Path(args.storage).expanduser().resolve())

    if args.resume:
        storage = Path(args.storage).expanduser().resolve()
        exp_dir = storage / args.experiment if args.experiment else latest_sweep(storage)
        if exp_dir is None or not (exp_dir / "sweep.json").is_file():
            fail(f"--resume: no sweep {'named ' + args.experiment if args.experiment else ''} under {storage}")
        try:
            check_restorable(exp_dir)  # before reading anything from it
            state = SweepState.load(exp_dir)
            specs = load_trials(exp_dir)
            check_resume_store(state, args.tracking_uri)
            prepare_store(state.tracking_uri)
        except (SweepError, StoreError) as e:
            fail(str(e))
        print(f"resuming sweep {state.experiment} ({len(specs)} trials) from {exp_dir}")
        if args.dry_run:
            return 0
    else:
        try:
            state, ctx, spec_list = prepare_new(args)
        except GridError as e:
            fail(str(e))
        if args.dry_run:
            cluster = ctx["cluster"] or _connect_and_read(address)
            workers = max(int(s.get("INPUT.NUM_WORKERS_TRAIN")) for s in spec_list)
            resources, device = plan_trial_resources(cluster, workers)
            where = f"Ray cluster at {address}" if address else "local Ray"
            print(
                f"grid {state.grid} ({state.grid_file}), dataset {state.dataset}, profile {state.profile}, "
                f"seeds {state.seeds}: {len(spec_list)} trials"
            )
            print(f"{where}: {format_resources(cluster)}; data root {spec_list[0].get('INPUT.DATA_ROOT')}")
            print_trial_table(spec_list, resources, device)
            if state.search:
                print_search(state.search)
            return 0
        if Path(state.exp_dir).exists():
            fail(
                f"--experiment {state.experiment}: {state.exp_dir} exists; use --resume to continue it, or another name"
            )
        try:
            prepare_store(state.tracking_uri)  # a bad store fails here, before Ray starts
        except StoreError as e:
            fail(str(e), 1)
        if args.dataset != "synthetic" and not Path(ctx["data_root"]).is_dir():
            fail(f"--data-root {ctx['data_root']}: not a directory; point it at the {args.dataset} download")

    if not args.resume:
        # A local Ray sees this machine: decide (and refuse a CPU paper run) before starting it.
        cluster = ctx["cluster"]
        if cluster is None:
            _init_ray(address)
            cluster = _cluster_resources(address)
        workers = max(int(s.get("INPUT.NUM_WORKERS_TRAIN")) for s in spec_list)
        resources, device = plan_trial_resources(cluster, workers)
        if args.profile == "paper" and device == "cpu" and not args.force:
            fail(paper_on_cpu_message(spec_list, args.dataset, ctx["data_root"], cluster))
        if args.dataset == "synthetic":
            _generate_synthetic(spec_list[0].config)
        if ctx["cluster"] is not None:
            _init_ray(address)
        specs = _finalize_specs(state, spec_list, resources, device)
        Path(state.exp_dir).mkdir(parents=True, exist_ok=True)
        trials_file = save_trials(state.exp_dir, specs)
        try:
            state.parent_run_id = start_parent(state, len(specs), [trials_file, Path(state.grid_file)])
        except StoreError as e:
            trials_file.unlink(missing_ok=True)
            fail(str(e), 1)
        state.save()  # only now: a sweep.json always names an existing parent run
        print(
            f"sweep {state.experiment}: {len(specs)} trials, each {format_resources(resources)} on {device}; "
            f"MLflow parent run {state.parent_run_id}"
        )
    else:
        _init_ray(address)
        try:
            reopen_parent(state, len(specs), [Path(state.exp_dir) / "trials.json"])
        except (SweepError, StoreError) as e:
            fail(str(e), 2)

    if _LOCAL_SESSION:
        local_ray.record(state.exp_dir, _LOCAL_SESSION[0])
    status, outcome = "FAILED", None
    try:
        tuner = build_tuner(
            state,
            specs,
            restore=args.resume,
            max_concurrent=args.max_concurrent,
            retry_failed=args.retry_failed,
            hook_factories=hook_factories,
        )
        results = tuner.fit()
        if state.search:
            outcome = search_outcome(results, specs, int(state.search["num_samples"]))
        else:
            outcome = trial_outcome(results, specs)
        status = sweep_status(outcome)
    except KeyboardInterrupt:
        status = "KILLED"
    finally:
        if state.search:  # also after Ctrl-C: the trials Tune stopped end FINISHED, whatever killed their process
            from tune.search import close_stopped_runs

            try:
                close_stopped_runs(state.tracking_uri, state.parent_run_id)
            except Exception as e:
                print(f"warning: could not close the MLflow runs of early-stopped trials: {e}", file=sys.stderr)
        files: list[Path] = []
        if status != "KILLED":
            files = report(state, outcome, time.time() - t_start)
        end_parent(state, status, files)
        local_ray.forget(state.exp_dir)
    if status == "KILLED":
        print(
            f"\ninterrupted{' (SIGTERM)' if terminated.got else ''}: MLflow parent run {state.parent_run_id} "
            f"and its unfinished child runs marked KILLED. Continue with:\n"
            f"  python tune/run_ablation.py --resume --experiment {state.experiment}"
            + (f" --storage {Path(state.exp_dir).parent}" if Path(state.exp_dir).parent != DEFAULT_STORAGE else "")
        )
        return 143 if terminated.got else 130
    if status == "FAILED":
        print(
            f"some trials failed after {MAX_FAILURES} retries: {', '.join(outcome['errored'])}; "
            f"see {state.exp_dir}/<trial>/error.txt and outputs/<trial>/train.log"
        )
        return 1
    return 0


def paper_on_cpu_message(spec_list: list, dataset: str, data_root: str, cluster: dict) -> str:
    """--profile paper without GPUs: the expected time, and how to go on."""
    epochs = int(spec_list[0].get("SOLVER.MAX_EPOCHS"))
    images = _count_train_images(dataset, data_root)
    cpus = cluster.get("CPU", 1)
    hours = estimate_cpu_hours(len(spec_list), epochs, images, cpus)
    return (
        f"--profile paper: no GPU here ({format_resources(cluster)}). Expected time: at least "
        f"{hours:,.0f} hours ({hours / 24:,.0f} days) = {len(spec_list)} trials x {epochs} epochs x {images} "
        f"training images x {CPU_SECONDS_PER_IMAGE_2CORES * 2 / max(cpus, 1):.0f} s per image "
        f"(ResNet-50 forward+backward at 900x1500, measured on 2 CPU cores; RPN, loss and evaluation not "
        f"counted). Add --force to run it anyway, or use --profile smoke."
    )


def _connect_and_read(address: str | None) -> dict:
    _init_ray(address)
    return _cluster_resources(address)


def _generate_synthetic(config: dict) -> None:
    """Make the generated dataset once in the driver (trials would race to create it)."""
    from oimnet.config import load_config
    from oimnet.data import ensure_synthetic
    from oimnet.engine.run_setup import synth_kwargs

    cfg = load_config(None, config)
    t0 = time.time()
    ensure_synthetic(cfg.INPUT.DATA_ROOT, **synth_kwargs(cfg))
    print(f"synthetic dataset ready at {cfg.INPUT.DATA_ROOT} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
