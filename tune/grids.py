"""Grid files: loading, validation and expansion into trials.

A grid is data (``experiments/grids/<name>.yaml``)::

    description: "..."
    datasets:   {synthetic: experiments/synthetic.yaml, prw: ..., cuhk: ...}
    profiles:   {smoke: {KEY: VALUE, ...}, paper: {...}}
    fixed:      {KEY: VALUE, ...}          # every trial
    rows:                                  # named variants
      - {name: OIMNet++, paper_label: OIMNet++, overrides: {KEY: VALUE}}
    axes:                                  # optional, crossed with the rows
      MODEL.LOSS.OIM_EPS: [0.0, 0.1]
    search: {...}                          # optional: sample configs instead (tune/search.py)
    seeds: 3                               # optional: seeds 1..N per row when --seeds is not given (default 1)

``datasets`` and ``profiles`` default to ``experiments/grids/_common.yaml``;
a grid's own ``profiles.<name>`` mapping is merged key by key over the common
one. Override mappings may be flat (``MODEL.LOSS.TYPE: OIM``) or nested.

Merge order of one trial's config: base file of the dataset <- profile <-
fixed <- row <- axis values <- ``--set`` <- runtime keys (paths, seed,
device, MLflow names). Each stage is validated with
:func:`oimnet.config.load_config`, so an error names the grid file and the
stage (profile, fixed, row, axis value) that caused it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oimnet.config import (
    ConfigError,
    flatten_mapping,
    get_dotted,
    load_config,
    read_yaml_mapping,
    set_dotted,
    to_mapping,
)
from tune.search import Search, SearchError, parse_search

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GRID_DIR = PROJECT_ROOT / "experiments" / "grids"
COMMON_FILE = GRID_DIR / "_common.yaml"

_TOP_KEYS = {"name", "description", "datasets", "profiles", "fixed", "rows", "axes", "search", "seeds"}
_ROW_KEYS = {"name", "paper_label", "overrides"}


class GridError(ValueError):
    """A grid file problem; the message names the file and the row/stage."""


@dataclass
class Row:
    name: str
    paper_label: str
    overrides: dict[str, Any]
    index: int


@dataclass
class Grid:
    """A validated grid file (before choosing dataset/profile/seeds)."""

    path: Path
    name: str
    description: str
    datasets: dict[str, Path]  # --dataset -> absolute base config path
    profiles: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    rows: list[Row]
    axes: dict[str, list[Any]]
    search: Search | None = None  # a `search:` section (tune/search.py)
    seeds: int = 1  # seeds 1..seeds per row when the command line gives none


@dataclass
class TrialSpec:
    """One Ray trial = one training run.

    ``config`` is the full merged config as a nested mapping of plain
    dicts and lists (:func:`oimnet.config.to_mapping`; JSON-safe, what
    ``load_config(None, config)`` takes back inside the trial); read or
    change one key with :meth:`get` / :meth:`set` ("SOLVER.MAX_EPOCHS").
    """

    key: str  # unique, file-system safe: trial name and output folder
    row: str
    paper_label: str
    row_index: int
    seed: int
    overrides: dict[str, Any]  # row + axis values (what distinguishes it)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "row": self.row,
            "paper_label": self.paper_label,
            "row_index": self.row_index,
            "seed": self.seed,
            "overrides": self.overrides,
            "config": self.config,
        }

    def get(self, key: str):
        """The value of dotted ``key`` in :attr:`config`."""
        return get_dotted(self.config, key)

    def set(self, key: str, value) -> None:
        set_dotted(self.config, key, value)

    @classmethod
    def from_dict(cls, d: dict) -> TrialSpec:
        return cls(**d)


# ----------------------------------------------------------------- loading
def resolve_grid_path(grid: str) -> Path:
    """``--grid NAME|PATH``: an existing file, else experiments/grids/NAME.yaml."""
    p = Path(grid).expanduser()
    if p.is_file():
        return p.resolve()
    for cand in (GRID_DIR / grid, GRID_DIR / f"{grid}.yaml"):
        if cand.is_file():
            return cand.resolve()
    raise GridError(
        f"--grid {grid}: no such grid file; available: {', '.join(available_grids()) or 'none'}"
        f" (or give a path to a YAML file)"
    )


def available_grids() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.yaml") if not p.name.startswith("_"))


def _read_yaml(path: Path) -> dict:
    return read_yaml_mapping(path, GridError)


def _flat_overrides(value: Any, where: str) -> dict[str, Any]:
    """Nested or dotted mapping -> {dotted key: value}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where}: expected a mapping of config keys to values, got {type(value).__name__}")
    return flatten_mapping(value)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load_grid(path: str | Path) -> Grid:
    """Read and structurally check a grid file (config values are checked by :func:`expand`)."""
    path = Path(path).resolve()
    shown = _display(path)
    data = _read_yaml(path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise GridError(
            f"{shown}: unknown top-level key {unknown[0]!r}; expected some of: {', '.join(sorted(_TOP_KEYS))}"
        )
    common = _read_yaml(COMMON_FILE) if COMMON_FILE.is_file() and path != COMMON_FILE else {}

    datasets_raw = {**(common.get("datasets") or {}), **(data.get("datasets") or {})}
    datasets: dict[str, Path] = {}
    for name, file in datasets_raw.items():
        base = Path(str(file))
        if not base.is_absolute():
            # Relative to the project for the shipped grids, else to the grid file.
            base = PROJECT_ROOT / base if (PROJECT_ROOT / base).is_file() else path.parent / base
        if not base.is_file():
            raise GridError(f"{shown}: datasets.{name}: base config {file} not found")
        datasets[str(name)] = base

    profiles: dict[str, dict[str, Any]] = {}
    for src, where in ((common, _display(COMMON_FILE)), (data, shown)):
        raw = src.get("profiles") or {}
        if not isinstance(raw, dict):
            raise GridError(f"{where}: profiles: expected a mapping of profile name -> overrides")
        for pname, ov in raw.items():
            profiles.setdefault(str(pname), {}).update(_flat_overrides(ov, f"{where}: profile '{pname}'"))

    fixed = _flat_overrides(data.get("fixed"), f"{shown}: fixed")

    rows_raw = data.get("rows")
    rows: list[Row] = []
    implicit = rows_raw is None and bool(data.get("axes"))  # axes alone: one unnamed row
    if rows_raw is None:
        rows_raw = [{"name": "", "overrides": {}}] if implicit else []
    if not isinstance(rows_raw, list):
        raise GridError(f"{shown}: rows: expected a list of {{name, paper_label, overrides}}")
    seen: set[str] = set()
    for i, r in enumerate(rows_raw):
        if not isinstance(r, dict):
            raise GridError(f"{shown}: rows[{i}]: expected a mapping with name, paper_label, overrides")
        bad = sorted(set(r) - _ROW_KEYS)
        if bad:
            raise GridError(
                f"{shown}: rows[{i}]: unknown key {bad[0]!r}; expected some of: name, paper_label, overrides"
            )
        name = r.get("name")
        if not isinstance(name, str) or (not name and not implicit):
            raise GridError(f"{shown}: rows[{i}]: 'name' must be a non-empty string")
        if name in seen:
            raise GridError(f"{shown}: row '{name}': duplicate row name")
        seen.add(name)
        label = r.get("paper_label") or ""
        rows.append(Row(name, str(label), _flat_overrides(r.get("overrides"), f"{shown}: row '{name}': overrides"), i))
    if not rows:
        raise GridError(f"{shown}: no rows and no axes; nothing to run")

    axes_raw = data.get("axes") or {}
    axes = _flat_overrides(axes_raw, f"{shown}: axes")
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            raise GridError(f"{shown}: axes.{k}: expected a non-empty list of values, got {v!r}")

    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise GridError(f"{shown}: seeds: expected a positive integer (seeds 1..N per row), got {seeds!r}")
    search = None
    if data.get("search") is not None:
        try:
            search = parse_search(data["search"], f"{shown}: search")
        except SearchError as e:
            raise GridError(str(e)) from None
    return Grid(
        path=path,
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        datasets=datasets,
        profiles=profiles,
        fixed=fixed,
        rows=rows,
        axes=axes,
        search=search,
        seeds=seeds,
    )


# ----------------------------------------------------------------- expansion
def slug(text: str) -> str:
    """File-system and Ray safe: 'OIMNet++ OIM_EPS=0.1' -> 'OIMNetpp_OIM_EPS0.1'."""
    text = text.replace("+", "p").replace("=", "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "row"


def _axis_label(key: str) -> str:
    return key.split(".")[-1]


def _stage(grid: Grid, where: str, base_file: Path | None, overrides: dict, base=None):
    try:
        return load_config(str(base_file) if base_file else None, overrides, base=base)
    except ConfigError as e:
        msg = str(e)
        if base_file is not None:
            msg = msg.replace(f"{base_file}: ", f"{_display(base_file)}: ")
        raise GridError(f"{_display(grid.path)}: {where}: {msg}") from None


def expand(
    grid: Grid,
    *,
    dataset: str,
    profile: str,
    seeds: list[int],
    extra: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> list[TrialSpec]:
    """Every (row x axis values x seed) as a validated :class:`TrialSpec`.

    Args:
        dataset: a key of ``grid.datasets`` (synthetic, prw, cuhk).
        profile: a key of ``grid.profiles`` (smoke, paper).
        seeds: SEED values, one trial each per row.
        extra: ``--set`` overrides for every trial.
        runtime: keys the driver sets last (DATA_ROOT, DEVICE, ...); a value
            may be a callable ``f(spec) -> value`` for per-trial keys.
    Raises:
        GridError naming the grid file and the row/stage at fault.
    """
    shown = _display(grid.path)
    if dataset not in grid.datasets:
        raise GridError(f"{shown}: dataset {dataset!r} has no base config; expected one of: {', '.join(grid.datasets)}")
    if profile not in grid.profiles:
        raise GridError(f"{shown}: profile {profile!r} not defined; expected one of: {', '.join(grid.profiles)}")
    base = _stage(grid, f"profile '{profile}'", grid.datasets[dataset], grid.profiles[profile])
    base = _stage(grid, "fixed", None, grid.fixed, base)
    axis_keys = list(grid.axes)
    combos = list(itertools.product(*(grid.axes[k] for k in axis_keys))) if axis_keys else [()]
    trials: list[TrialSpec] = []
    index = 0
    for row in grid.rows:
        row_cfg = _stage(grid, f"row '{row.name}'", None, row.overrides, base)
        for combo in combos:
            axis_ov = dict(zip(axis_keys, combo))
            suffix = " ".join(f"{_axis_label(k)}={v}" for k, v in axis_ov.items())
            name = " ".join(x for x in (row.name, suffix) if x)
            cfg = _stage(grid, f"row '{name}'", None, axis_ov, row_cfg) if axis_ov else row_cfg
            if extra:
                cfg = _stage(grid, f"row '{name}': --set", None, extra, cfg)
            for seed in seeds:
                spec = TrialSpec(
                    key=f"r{index:02d}-{slug(name)}-s{seed}",
                    row=name,
                    paper_label=row.paper_label,
                    row_index=index,
                    seed=int(seed),
                    overrides={**row.overrides, **axis_ov},
                )
                rt = {"SEED": int(seed)}
                for k, v in (runtime or {}).items():
                    rt[k] = v(spec) if callable(v) else v
                final = _stage(grid, f"row '{name}'", None, rt, cfg)
                spec.config = to_mapping(final)
                trials.append(spec)
            index += 1
    return trials


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> {KEY: typed value}."""
    from oimnet.config import parse_overrides

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise GridError(f"--set {item}: expected KEY=VALUE")
        try:
            out.update(dict(parse_overrides([item])))
        except ConfigError as e:
            raise GridError(f"--set {item}: {e}") from None
    return out
