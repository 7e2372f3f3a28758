"""One configuration schema: the authors' keys, their defaults, and ours.

The schema is an OmegaConf structured config. Every key of the authors'
released YAML files exists here under the same name, nesting and default
(their configs load unchanged); keys this project adds are marked "ours".
Each key carries a one-line meaning and its checks (choices, numeric range)
in the schema itself; keys the release carries but nothing reads are marked
``unused`` and warn when set. :func:`validate` is the one validator.

Loading order: schema defaults <- ``--cfg FILE`` <- command-line overrides.
Overrides come either as upstream-style pairs (``KEY VALUE``) or as
``KEY=VALUE``. Every failure raises :class:`ConfigError` whose message names
the file/key/value and what was expected.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from oimnet.constants import DATASETS, LOSS_TYPES, NORM_TYPES

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "CHOICES",
    "RANGES",
    "UNUSED",
    "DOCS",
    "validate",
    "get_default_config",
    "load_config",
    "merge_overrides",
    "flatten",
    "flatten_mapping",
    "to_mapping",
    "get_dotted",
    "set_dotted",
    "unflatten",
    "to_yaml",
    "all_keys",
]


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says how."""


# ----------------------------------------------------------------- schema
@dataclass(frozen=True)
class Range:
    """Allowed numeric values: low <= v (low < v when ``low_open``) and v <= high; None = unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, is_int: bool) -> str:
        if is_int and self.low == 1 and self.high is None and not self.low_open:
            return "a positive integer"
        kind = "an integer" if is_int else "a number"
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low}"
        return f"{kind} in {'(' if self.low_open else '['}{float(self.low)}, {float(self.high)}]"


POSITIVE = Range(low=1)  # integers >= 1
NON_NEGATIVE = Range(low=0)
ABOVE_ZERO = Range(low=0, low_open=True)
FRACTION = Range(low=0, high=1)


def key(default, doc: str, *, choices: tuple | None = None, range: Range | None = None, unused: str = ""):
    """A schema field with its one-line meaning and its checks.

    ``choices``: the allowed values; ``range``: allowed numbers; ``unused``: why
    nothing reads this key (the release's configs carry it, so it is accepted,
    but setting it to something other than the default warns).
    """
    meta = {"doc": doc, "choices": choices, "range": range, "unused": unused}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SynthCfg:
    """Ours: settings of the generated person-search world (dataset "synthetic")."""

    SEED: int = key(0, "seed of the generated world")
    IDENTITIES: int = key(0, "identities in the world; 0: the generator's default", range=NON_NEGATIVE)
    FRAMES: int = key(0, "frames (images) in the world; 0: the generator's default", range=NON_NEGATIVE)
    SIZE: str = key("", 'frame size "WxH"; "": the generator\'s default')


@dataclass
class InputCfg:
    DATASET: str = key("CUHK-SYSU", "which dataset", choices=DATASETS)
    DATA_ROOT: str = key("/workspace/dataset/CUHK-SYSU", "dataset root folder")
    MIN_SIZE: int = key(900, "shorter image side after resizing, pixels", range=POSITIVE)
    MAX_SIZE: int = key(1500, "cap on the longer image side after resizing, pixels", range=POSITIVE)
    BATCH_SIZE_TRAIN: int = key(5, "images per training step", range=POSITIVE)
    BATCH_SIZE_TEST: int = key(1, "images per inference batch", range=POSITIVE)
    NUM_WORKERS_TRAIN: int = key(8, "data-loading worker processes for training", range=NON_NEGATIVE)
    NUM_WORKERS_TEST: int = key(1, "data-loading worker processes for evaluation", range=NON_NEGATIVE)
    SYNTH: SynthCfg = field(default_factory=SynthCfg)


@dataclass
class SolverCfg:
    MAX_EPOCHS: int = key(20, "training epochs", range=POSITIVE)
    BASE_LR: float = key(0.003, "SGD learning rate after warm-up", range=ABOVE_ZERO)
    WARMUP_FACTOR: float = key(
        0.001, "LR factor at the first step, rising linearly to 1 over epoch 1", range=Range(0, 1, True)
    )
    LR_DECAY_MILESTONES: list[int] = key([16], "epochs (0-based) from which the LR is multiplied by GAMMA once more")
    GAMMA: float = key(0.1, "LR decay factor at each milestone", range=ABOVE_ZERO)
    WEIGHT_DECAY: float = key(0.0005, "SGD weight decay", range=NON_NEGATIVE)
    SGD_MOMENTUM: float = key(0.9, "SGD momentum", range=FRACTION)
    LW_RPN_REG: float = key(1.0, "weight of the RPN box-regression loss", range=NON_NEGATIVE)
    LW_RPN_CLS: float = key(1.0, "weight of the RPN objectness loss", range=NON_NEGATIVE)
    LW_PROPOSAL_REG: float = key(10.0, "weight of the RoI box-regression loss", range=NON_NEGATIVE)
    LW_PROPOSAL_CLS: float = key(1.0, "weight of the RoI person/background loss", range=NON_NEGATIVE)
    LW_BOX_REG: float = key(1.0, "(release) box-regression weight", unused="the RoI regression is LW_PROPOSAL_REG")
    LW_BOX_CLS: float = key(1.0, "(release) box-classification weight", unused="the RoI classifier is LW_PROPOSAL_CLS")
    LW_BOX_REID: float = key(1.0, "weight of the re-id (OIM/LOIM) loss", range=NON_NEGATIVE)
    CLIP_GRADIENTS: float = key(10.0, "max gradient norm; <= 0 disables clipping")
    AMP: bool = key(True, "ours: float16 autocast + gradient scaling, used only on CUDA")
    WORLD_SIZE: int = key(
        1,
        "ours: data-parallel workers of one run (one GPU each, or CPU gloo workers); "
        "the step's batch is WORLD_SIZE x INPUT.BATCH_SIZE_TRAIN images",
        range=POSITIVE,
    )
    KEYED_SAMPLING: bool = key(
        False,
        "ours: anchor/RoI sampling drawn per image from (seed, epoch, image index), so a run samples "
        "the same on any WORLD_SIZE; always on when WORLD_SIZE > 1 (off: the release's global-RNG order)",
    )


@dataclass
class BackboneCfg:
    """Ours: which ResNet, and where its ImageNet weights lie."""

    NAME: str = key("resnet50", "backbone network", choices=("resnet50", "resnet34", "resnet18", "tiny"))
    WEIGHTS: str = key("", 'local torchvision-format state dict of the backbone; "": random init')


@dataclass
class RPNCfg:
    NMS_THRESH: float = key(0.7, "IoU of the RPN's non-maximum suppression", range=FRACTION)
    BATCH_SIZE_TRAIN: int = key(256, "anchors sampled per image for the RPN loss", range=POSITIVE)
    POS_FRAC_TRAIN: float = key(0.5, "fraction of positives among the sampled anchors", range=FRACTION)
    POS_THRESH_TRAIN: float = key(0.7, "anchor IoU from which an anchor is positive", range=FRACTION)
    NEG_THRESH_TRAIN: float = key(0.3, "anchor IoU below which an anchor is negative", range=FRACTION)
    PRE_NMS_TOPN_TRAIN: int = key(12000, "proposals kept before NMS, training", range=POSITIVE)
    PRE_NMS_TOPN_TEST: int = key(6000, "proposals kept before NMS, inference", range=POSITIVE)
    POST_NMS_TOPN_TRAIN: int = key(2000, "proposals kept after NMS, training", range=POSITIVE)
    POST_NMS_TOPN_TEST: int = key(300, "proposals kept after NMS, inference", range=POSITIVE)
    # The release passes (8, 16, 32) to torchvision's AnchorGenerator; its checkpoints need this default.
    ANCHOR_SIZES: list[int] = key([8, 16, 32], "ours: anchor side lengths in pixels (torchvision AnchorGenerator)")
    ASPECT_RATIOS: list[float] = key([0.5, 1.0, 2.0], "ours: anchor aspect ratios (height / width)")


@dataclass
class RoIHeadCfg:
    BN_NECK: bool = key(True, "(release) BN neck of the embedding", unused="the embedding head always has it")
    NORM_TYPE: str = key(
        "none", "normalisation of the embedding: none (OIMNet), batchnorm, protonorm (OIMNet++)", choices=NORM_TYPES
    )
    BATCH_SIZE_TRAIN: int = key(128, "RoIs sampled per image for the RoI losses", range=POSITIVE)
    POS_FRAC_TRAIN: float = key(0.5, "fraction of positives among the sampled RoIs", range=FRACTION)
    POS_THRESH_TRAIN: float = key(0.5, "RoI IoU from which a RoI is a person", range=FRACTION)
    NEG_THRESH_TRAIN: float = key(0.5, "RoI IoU below which a RoI is background", range=FRACTION)
    SCORE_THRESH_TEST: float = key(0.5, "detections below this person score are dropped", range=FRACTION)
    NMS_THRESH_TEST: float = key(0.4, "IoU of the detections' non-maximum suppression", range=FRACTION)
    DETECTIONS_PER_IMAGE_TEST: int = key(300, "detections kept per image", range=POSITIVE)
    AUGMENT: bool = key(False, "RoI augmentation (OIMNet+++)")


@dataclass
class LossCfg:
    TYPE: str = key("OIM", "re-id loss: OIM, or LOIM (IoU-weighted memory update)", choices=LOSS_TYPES)
    LUT_SIZE: int = key(5532, "labeled identities the lookup table holds (>= the training identities)", range=POSITIVE)
    CQ_SIZE: int = key(5000, "unlabeled features the circular queue holds", range=POSITIVE)
    OIM_MOMENTUM: float = key(0.5, "momentum of the lookup-table update", range=FRACTION)
    OIM_SCALAR: float = key(30.0, "inverse temperature of the OIM softmax", range=ABOVE_ZERO)
    # The LOIM update weight is clamp(IoU, 0.7, 1 - eps): eps above 0.3 would empty that interval.
    OIM_EPS: float = key(0.1, "LOIM: 1 - eps caps the IoU used as update weight", range=Range(0.0, 0.3))


@dataclass
class ModelCfg:
    BACKBONE: BackboneCfg = field(default_factory=BackboneCfg)
    RPN: RPNCfg = field(default_factory=RPNCfg)
    ROI_HEAD: RoIHeadCfg = field(default_factory=RoIHeadCfg)
    LOSS: LossCfg = field(default_factory=LossCfg)


@dataclass
class MlflowCfg:
    """Ours: experiment tracking."""

    EXPERIMENT: str = key("oimnet", "MLflow experiment name")
    RUN_NAME: str = key("", 'MLflow run name; "": the OUTPUT_DIR folder name')
    LOG_CHECKPOINT: bool = key(True, "upload the last checkpoint as an artifact")


@dataclass
class ValCfg:
    """Ours: an identity-disjoint validation split carved from the training set (oimnet.data.splits)."""

    ENABLED: bool = key(
        False,
        "hold out training identities for validation (tune on val_mAP, test once at the end); "
        "false = the release's protocol (all training ids, test every EVAL_PERIOD)",
    )
    FRACTION: float = key(0.1, "share of the training identities held out", range=Range(0, 0.9, True))
    SEED: int = key(0, "seed of the held-out identities, the queries and the CUHK-SYSU distractors")


@dataclass
class Config:
    INPUT: InputCfg = field(default_factory=InputCfg)
    SOLVER: SolverCfg = field(default_factory=SolverCfg)
    MODEL: ModelCfg = field(default_factory=ModelCfg)
    EVAL_PERIOD: int = key(5, "evaluate every this many epochs (and after the last)", range=POSITIVE)
    EVAL_USE_GT: bool = key(False, "evaluate with the ground-truth gallery boxes instead of detections")
    EVAL_USE_CACHE: bool = key(
        False, "(release) re-score a saved eval cache", unused="use `python -m oimnet.evaluate --cache PATH`"
    )
    EVAL_USE_CBGM: bool = key(False, "context bipartite graph matching when scoring")
    EVAL_GT_AT_END: bool = key(
        True, "ours: after the last epoch also evaluate the test split on ground-truth boxes (mAP_gt, top1_gt)"
    )
    EVAL_GALLERY_SIZE: int = key(
        100, "ours: CUHK-SYSU gallery size, -1 = the full set", choices=(50, 100, 500, 1000, 2000, 4000, -1)
    )
    CKPT_PERIOD: int = key(20, "write a checkpoint every this many epochs (and after the last)", range=POSITIVE)
    DISP_PERIOD: int = key(1000, "log the loss window means every this many steps", range=POSITIVE)
    TF_BOARD: bool = key(False, "(release) TensorBoard logging", unused="runs are tracked in MLflow")
    DEVICE: str = key("cuda", "cuda (falls back to the CPU with a warning when none) or cpu")
    NVIDIA_DEVICE: int = key(0, "CUDA device index", range=NON_NEGATIVE)
    SEED: int = key(1, "random seed; negative: pick one (it is logged)")
    OUTPUT_DIR: str = key("./output", "checkpoints, logs and results of the run")
    MLFLOW: MlflowCfg = field(default_factory=MlflowCfg)
    VAL: ValCfg = field(default_factory=ValCfg)


def schema_fields(cls=Config, prefix: str = ""):
    """(dotted key, dataclasses.Field) of every leaf of the schema, in order."""
    for f in fields(cls):
        if is_dataclass(f.default_factory):  # a section
            yield from schema_fields(f.default_factory, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


# Keys whose value must be one of a fixed set (from the schema).
CHOICES: dict[str, tuple[Any, ...]] = {k: f.metadata["choices"] for k, f in schema_fields() if f.metadata["choices"]}
RANGES: dict[str, Range] = {k: f.metadata["range"] for k, f in schema_fields() if f.metadata["range"]}
# Keys the release's configs carry but nothing reads: key -> why.
UNUSED: dict[str, str] = {k: f.metadata["unused"] for k, f in schema_fields() if f.metadata["unused"]}
DOCS: dict[str, str] = {k: f.metadata["doc"] for k, f in schema_fields()}


class ConfigWarning(UserWarning):
    """A config sets a key that nothing reads."""


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


def to_mapping(cfg: DictConfig) -> dict[str, Any]:
    """The merged config as plain nested dicts and lists (JSON-safe).

    The one form a config crosses a process boundary in (a sweep's
    trials.json, a Tune trial, a Ray Train worker); ``load_config(None,
    mapping)`` takes it back. It is flattened only into MLflow params
    (:func:`flatten`).
    """
    return OmegaConf.to_container(cfg, resolve=True)


def get_dotted(mapping: dict, key: str, default: Any = ...) -> Any:
    """``mapping["A"]["B"]`` for key "A.B" of a nested mapping; KeyError (or
    ``default`` when given) when a part is missing."""
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def set_dotted(mapping: dict, key: str, value: Any) -> None:
    """Set key "A.B" of a nested mapping in place (missing sections are created)."""
    *parents, leaf = key.split(".")
    node = mapping
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{dotted key: value} -> the nested mapping (:func:`flatten_mapping`'s inverse)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        set_dotted(out, key, value)
    return out


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
    """The one check of a merged config: the schema's choices and ranges, and MAX_SIZE >= MIN_SIZE.

    Types are OmegaConf's job (at merge time); the code that reads a key
    (the loss, the model, the loop) trusts what passes here.
    """
    for key_, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key_)
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{where}{key_}: invalid value {value!r}; expected one of: {allowed}")
    for key_, allowed in RANGES.items():
        value = OmegaConf.select(cfg, key_)
        if value not in allowed:
            is_int = isinstance(value, int) and not isinstance(value, bool)
            raise ConfigError(f"{where}{key_}: invalid value {value!r}; expected {allowed.describe(is_int)}")
    if cfg.INPUT.MAX_SIZE < cfg.INPUT.MIN_SIZE:
        raise ConfigError(
            f"{where}INPUT.MAX_SIZE: invalid value {cfg.INPUT.MAX_SIZE!r}; expected >= INPUT.MIN_SIZE ({cfg.INPUT.MIN_SIZE})"
        )
    return cfg


def warn_unused(cfg: DictConfig) -> list[str]:
    """Warn (ConfigWarning) for every key nothing reads that is set away from its default; their names."""
    defaults = get_default_config()
    set_keys = [k for k in UNUSED if OmegaConf.select(cfg, k) != OmegaConf.select(defaults, k)]
    for k in set_keys:
        warnings.warn(
            f"{k} = {OmegaConf.select(cfg, k)!r} has no effect: nothing reads it ({UNUSED[k]})", ConfigWarning, 2
        )
    return set_keys


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
        overrides: command-line tokens (``KEY VALUE`` pairs or ``KEY=VALUE``),
            a dict of dotted keys, or a nested mapping (:func:`to_mapping`'s).
        base: start from this config instead of the defaults.
    """
    cfg = base.copy() if base is not None else get_default_config()
    OmegaConf.set_struct(cfg, True)
    if cfg_file:
        _merge_mapping(cfg, load_yaml_file(cfg_file), where=f"{cfg_file}: ")
        validate(cfg, where=f"{cfg_file}: ")
    merge_overrides(cfg, overrides)
    validate(cfg)
    warn_unused(cfg)
    return cfg
