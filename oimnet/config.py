"""One configuration schema: the authors' keys, their defaults, and ours.

The schema is an OmegaConf structured config. Every key of the released YAML
files exists here under the same name, nesting and default (see
``shared/spec/config-keys.md``); keys this project adds are marked "ours".

Loading order: schema defaults <- ``--cfg FILE`` <- command-line overrides.
Overrides come either as upstream-style pairs (``KEY VALUE``) or as
``KEY=VALUE``. Every failure raises :class:`ConfigError` whose message names
the file/key/value and what was expected.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "ConfigError",
    "CHOICES",
    "get_default_config",
    "load_config",
    "merge_overrides",
    "flatten",
    "flatten_mapping",
    "to_yaml",
    "all_keys",
]


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says how."""


# ----------------------------------------------------------------- schema
@dataclass
class SynthCfg:
    """Ours: settings of the generated person-search world (dataset "synthetic")."""

    SEED: int = 0
    IDENTITIES: int = 0  # 0: the generator's default
    FRAMES: int = 0  # 0: the generator's default
    SIZE: str = ""  # "WxH"; "": the generator's default


@dataclass
class InputCfg:
    DATASET: str = "CUHK-SYSU"
    DATA_ROOT: str = "/workspace/dataset/CUHK-SYSU"
    MIN_SIZE: int = 900
    MAX_SIZE: int = 1500
    BATCH_SIZE_TRAIN: int = 5
    BATCH_SIZE_TEST: int = 1
    NUM_WORKERS_TRAIN: int = 8
    NUM_WORKERS_TEST: int = 1
    SYNTH: SynthCfg = field(default_factory=SynthCfg)


@dataclass
class SolverCfg:
    MAX_EPOCHS: int = 20
    BASE_LR: float = 0.003
    WARMUP_FACTOR: float = 0.001
    LR_DECAY_MILESTONES: list[int] = field(default_factory=lambda: [16])
    GAMMA: float = 0.1
    WEIGHT_DECAY: float = 0.0005
    SGD_MOMENTUM: float = 0.9
    LW_RPN_REG: float = 1.0
    LW_RPN_CLS: float = 1.0
    LW_PROPOSAL_REG: float = 10.0
    LW_PROPOSAL_CLS: float = 1.0
    LW_BOX_REG: float = 1.0
    LW_BOX_CLS: float = 1.0
    LW_BOX_REID: float = 1.0
    CLIP_GRADIENTS: float = 10.0
    AMP: bool = True  # ours: autocast + GradScaler, used only on CUDA


@dataclass
class BackboneCfg:
    """Ours: which ResNet, and where its ImageNet weights lie."""

    NAME: str = "resnet50"
    WEIGHTS: str = ""  # local torchvision-format state dict; "" = random init


@dataclass
class RPNCfg:
    NMS_THRESH: float = 0.7
    BATCH_SIZE_TRAIN: int = 256
    POS_FRAC_TRAIN: float = 0.5
    POS_THRESH_TRAIN: float = 0.7
    NEG_THRESH_TRAIN: float = 0.3
    PRE_NMS_TOPN_TRAIN: int = 12000
    PRE_NMS_TOPN_TEST: int = 6000
    POST_NMS_TOPN_TRAIN: int = 2000
    POST_NMS_TOPN_TEST: int = 300
    # ours: anchor side lengths in pixels as torchvision's AnchorGenerator reads
    # them. The release passes (8, 16, 32) there; its checkpoints need this default.
    ANCHOR_SIZES: list[int] = field(default_factory=lambda: [8, 16, 32])
    ASPECT_RATIOS: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])


@dataclass
class RoIHeadCfg:
    BN_NECK: bool = True
    NORM_TYPE: str = "none"
    BATCH_SIZE_TRAIN: int = 128
    POS_FRAC_TRAIN: float = 0.5
    POS_THRESH_TRAIN: float = 0.5
    NEG_THRESH_TRAIN: float = 0.5
    SCORE_THRESH_TEST: float = 0.5
    NMS_THRESH_TEST: float = 0.4
    DETECTIONS_PER_IMAGE_TEST: int = 300
    AUGMENT: bool = False


@dataclass
class LossCfg:
    TYPE: str = "OIM"
    LUT_SIZE: int = 5532
    CQ_SIZE: int = 5000
    OIM_MOMENTUM: float = 0.5
    OIM_SCALAR: float = 30.0
    OIM_EPS: float = 0.1


@dataclass
class ModelCfg:
    BACKBONE: BackboneCfg = field(default_factory=BackboneCfg)
    RPN: RPNCfg = field(default_factory=RPNCfg)
    ROI_HEAD: RoIHeadCfg = field(default_factory=RoIHeadCfg)
    LOSS: LossCfg = field(default_factory=LossCfg)


@dataclass
class MlflowCfg:
    """Ours: experiment tracking."""

    EXPERIMENT: str = "oimnet"
    RUN_NAME: str = ""
    LOG_CHECKPOINT: bool = True  # upload the last checkpoint as an artifact


@dataclass
class Config:
    INPUT: InputCfg = field(default_factory=InputCfg)
    SOLVER: SolverCfg = field(default_factory=SolverCfg)
    MODEL: ModelCfg = field(default_factory=ModelCfg)
    EVAL_PERIOD: int = 5
    EVAL_USE_GT: bool = False
    EVAL_USE_CACHE: bool = False
    EVAL_USE_CBGM: bool = False
    EVAL_GALLERY_SIZE: int = 100  # ours: CUHK-SYSU gallery size, -1 = full set
    CKPT_PERIOD: int = 20
    DISP_PERIOD: int = 1000
    TF_BOARD: bool = False
    DEVICE: str = "cuda"
    NVIDIA_DEVICE: int = 0
    SEED: int = 1
    OUTPUT_DIR: str = "./output"
    MLFLOW: MlflowCfg = field(default_factory=MlflowCfg)


# Keys whose value must be one of a fixed set.
CHOICES: dict[str, tuple[Any, ...]] = {
    "INPUT.DATASET": ("CUHK-SYSU", "PRW", "synthetic"),
    "MODEL.ROI_HEAD.NORM_TYPE": ("none", "batchnorm", "protonorm"),
    "MODEL.LOSS.TYPE": ("OIM", "LOIM"),
    "MODEL.BACKBONE.NAME": ("resnet50", "resnet34", "resnet18", "tiny"),
    "EVAL_GALLERY_SIZE": (50, 100, 500, 1000, 2000, 4000, -1),
}

# Numeric keys that must lie in a range: key -> (low, high, inclusive-text).
_RANGES: dict[str, tuple[float, float]] = {
    "MODEL.LOSS.OIM_EPS": (0.0, 0.3),
    "MODEL.LOSS.OIM_MOMENTUM": (0.0, 1.0),
    "MODEL.RPN.POS_FRAC_TRAIN": (0.0, 1.0),
    "MODEL.ROI_HEAD.POS_FRAC_TRAIN": (0.0, 1.0),
}

_POSITIVE_INT = (
    "INPUT.MIN_SIZE",
    "INPUT.MAX_SIZE",
    "INPUT.BATCH_SIZE_TRAIN",
    "INPUT.BATCH_SIZE_TEST",
    "SOLVER.MAX_EPOCHS",
    "MODEL.LOSS.LUT_SIZE",
    "MODEL.LOSS.CQ_SIZE",
    "EVAL_PERIOD",
    "CKPT_PERIOD",
    "DISP_PERIOD",
)


def get_default_config() -> DictConfig:
    """The schema with every default; a struct config (unknown keys rejected)."""
    cfg = OmegaConf.structured(Config)
    OmegaConf.set_struct(cfg, True)
    return cfg


# ----------------------------------------------------------------- helpers
def all_keys(cfg: DictConfig | None = None) -> list[str]:
    """Every leaf key of the schema as a dotted path, e.g. 'MODEL.LOSS.TYPE'."""
    return list(flatten(cfg if cfg is not None else get_default_config()).keys())


def _all_paths(cfg: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for k in cfg.keys():
        path = f"{prefix}{k}"
        out.append(path)
        v = cfg._get_node(k)
        if isinstance(v, DictConfig):
            out.extend(_all_paths(v, path + "."))
    return out


def flatten_mapping(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted key: leaf value}; lists are leaves."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_mapping(v, key + "."))
        else:
            out[key] = v
    return out


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Dotted-key view of a config: {'MODEL.LOSS.TYPE': 'OIM', ...}.

    Lists stay lists; this is what MLflow params are made of.
    """
    return flatten_mapping(OmegaConf.to_container(cfg, resolve=True))


def to_yaml(cfg: DictConfig) -> str:
    """The merged config as YAML (what every run stores beside its results)."""
    return OmegaConf.to_yaml(cfg)


def _unknown_key_message(key: str, where: str = "") -> str:
    schema = get_default_config()
    candidates = _all_paths(schema)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        # Fall back to matching the last component within the same parent.
        last = key.split(".")[-1]
        by_last = [c for c in candidates if c.split(".")[-1] == last]
        close = by_last[:1]
    hint = f"; did you mean {close[0]}?" if close else "; see `--print-config` for all keys"
    return f"{where}{key}: unknown key{hint}"


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _parse_value(text: str) -> Any:
    """Type a command-line value the way YAML would ('True' -> True, '[16]' -> [16])."""
    raw = text.strip()
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if quoted:
        return raw[1:-1]
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def _expected_type_text(node_type: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "a boolean (True/False)", str: "a string"}
    return names.get(node_type, str(getattr(node_type, "__name__", node_type)))


def _schema_leaf_type(key: str) -> Any:
    schema = get_default_config()
    node = schema
    parts = key.split(".")
    for p in parts[:-1]:
        node = node._get_node(p)
    leaf = node._get_node(parts[-1])
    try:
        from omegaconf import ListConfig

        if isinstance(leaf, ListConfig):
            return "a list, e.g. [16]"
        return _expected_type_text(leaf._metadata.ref_type)
    except Exception:  # pragma: no cover - defensive
        return "a value of the schema's type"


def _set_key(cfg: DictConfig, key: str, value: Any, where: str = "") -> None:
    paths = set(_all_paths(cfg))
    if key not in paths:
        raise ConfigError(_unknown_key_message(key, where))
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent._get_node(leaf), DictConfig):
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}{key}: is a section; set one of its keys, e.g. {key}.{next(iter(parent[leaf].keys()))}"
            )
        for k, v in value.items():
            _set_key(cfg, f"{key}.{k}", v, where)
        return
    try:
        parent[leaf] = value
    except OmegaConfBaseException:
        raise ConfigError(f"{where}{key}: invalid value {value!r}; expected {_schema_leaf_type(key)}") from None


def _merge_mapping(cfg: DictConfig, data: dict, where: str, prefix: str = "") -> None:
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in set(_all_paths(cfg)) and isinstance(OmegaConf.select(cfg, key), DictConfig):
            _merge_mapping(cfg, v, where, key + ".")
        else:
            _set_key(cfg, key, v, where)


def validate(cfg: DictConfig, where: str = "") -> DictConfig:
    """Check choices and ranges that types alone do not express."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{where}{key}: invalid value {value!r}; expected one of: {allowed}")
    for key, (lo, hi) in _RANGES.items():
        value = OmegaConf.select(cfg, key)
        if not lo <= value <= hi:
            raise ConfigError(f"{where}{key}: invalid value {value!r}; expected a number in [{lo}, {hi}]")
    for key in _POSITIVE_INT:
        value = OmegaConf.select(cfg, key)
        if value <= 0:
            raise ConfigError(f"{where}{key}: invalid value {value!r}; expected a positive integer")
    if cfg.INPUT.MAX_SIZE < cfg.INPUT.MIN_SIZE:
        raise ConfigError(
            f"{where}INPUT.MAX_SIZE: invalid value {cfg.INPUT.MAX_SIZE!r}; expected >= INPUT.MIN_SIZE ({cfg.INPUT.MIN_SIZE})"
        )
    return cfg


def parse_overrides(opts: Sequence[str]) -> list[tuple[str, Any]]:
    """Turn ``['A.B', "'x'", 'C=1']`` into ``[('A.B', 'x'), ('C', 1)]``.

    Pairs (upstream style) and ``KEY=VALUE`` may be mixed.
    """
    out: list[tuple[str, Any]] = []
    i = 0
    opts = list(opts)
    while i < len(opts):
        tok = opts[i]
        if "=" in tok and not tok.startswith(("'", '"')):
            key, _, val = tok.partition("=")
            out.append((key.strip(), _parse_value(val)))
            i += 1
            continue
        if i + 1 >= len(opts):
            raise ConfigError(f"{tok}: override has no value; expected `{tok} VALUE` or `{tok}=VALUE`")
        out.append((tok.strip(), _parse_value(opts[i + 1])))
        i += 2
    return out


def merge_overrides(cfg: DictConfig, opts: Iterable[str] | dict[str, Any], where: str = "") -> DictConfig:
    """Apply overrides (a list of command-line tokens, or a {dotted key: value} dict)."""
    pairs = list(opts.items()) if isinstance(opts, dict) else parse_overrides(list(opts))
    for key, value in pairs:
        _set_key(cfg, key, value, where)
    return cfg


def read_yaml_mapping(path, error: type[Exception] = None, what: str = "") -> dict:
    """A YAML file whose top level is a mapping ({} when empty).

    Raises ``error`` (default ConfigError) naming the path when the file
    cannot be read, is not YAML or is not a mapping (of ``what``, if given).
    """
    error = error or ConfigError
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        of = f" of {what}" if what else ""
        raise error(f"{path}: expected a mapping{of} at the top level, got {type(data).__name__}")
    return data


def load_yaml_file(path: str) -> dict:
    """Read a config YAML mapping; ConfigError naming the path when missing or malformed."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    return read_yaml_mapping(path, ConfigError, "config keys")


def load_config(
    cfg_file: str | None = None,
    overrides: Iterable[str] | dict[str, Any] = (),
    *,
    base: DictConfig | None = None,
) -> DictConfig:
    """Defaults <- YAML file <- overrides, validated.

    Args:
        cfg_file: a YAML file with (a subset of) the schema's keys, or None.
        overrides: command-line tokens (``KEY VALUE`` pairs or ``KEY=VALUE``)
            or a dict of dotted keys.
        base: start from this config instead of the defaults.
    """
    cfg = base.copy() if base is not None else get_default_config()
    OmegaConf.set_struct(cfg, True)
    if cfg_file:
        _merge_mapping(cfg, load_yaml_file(cfg_file), where=f"{cfg_file}: ")
        validate(cfg, where=f"{cfg_file}: ")
    merge_overrides(cfg, overrides)
    validate(cfg)
    return cfg
