"""Config schema: upstream keys and defaults, overrides, and the error messages."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oimnet.config import ConfigError, all_keys, flatten, get_default_config, load_config

ROOT = Path(__file__).resolve().parents[1]

# Every key of the authors' released configs with its default (as their YAML files carry them).
UPSTREAM_DEFAULTS = {
    "INPUT.DATASET": "CUHK-SYSU",
    "INPUT.DATA_ROOT": "/workspace/dataset/CUHK-SYSU",
    "INPUT.MIN_SIZE": 900,
    "INPUT.MAX_SIZE": 1500,
    "INPUT.BATCH_SIZE_TRAIN": 5,
    "INPUT.BATCH_SIZE_TEST": 1,
    "INPUT.NUM_WORKERS_TRAIN": 8,
    "INPUT.NUM_WORKERS_TEST": 1,
    "SOLVER.MAX_EPOCHS": 20,
    "SOLVER.BASE_LR": 0.003,
    "SOLVER.WARMUP_FACTOR": 0.001,
    "SOLVER.LR_DECAY_MILESTONES": [16],
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WEIGHT_DECAY": 0.0005,
    "SOLVER.SGD_MOMENTUM": 0.9,
    "SOLVER.LW_RPN_REG": 1,
    "SOLVER.LW_RPN_CLS": 1,
    "SOLVER.LW_PROPOSAL_REG": 10,
    "SOLVER.LW_PROPOSAL_CLS": 1,
    "SOLVER.LW_BOX_REG": 1,
    "SOLVER.LW_BOX_CLS": 1,
    "SOLVER.LW_BOX_REID": 1,
    "SOLVER.CLIP_GRADIENTS": 10.0,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.RPN.BATCH_SIZE_TRAIN": 256,
    "MODEL.RPN.POS_FRAC_TRAIN": 0.5,
    "MODEL.RPN.POS_THRESH_TRAIN": 0.7,
    "MODEL.RPN.NEG_THRESH_TRAIN": 0.3,
    "MODEL.RPN.PRE_NMS_TOPN_TRAIN": 12000,
    "MODEL.RPN.PRE_NMS_TOPN_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPN_TRAIN": 2000,
    "MODEL.RPN.POST_NMS_TOPN_TEST": 300,
    "MODEL.ROI_HEAD.BN_NECK": True,
    "MODEL.ROI_HEAD.NORM_TYPE": "none",
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 128,
    "MODEL.ROI_HEAD.POS_FRAC_TRAIN": 0.5,
    "MODEL.ROI_HEAD.POS_THRESH_TRAIN": 0.5,
    "MODEL.ROI_HEAD.NEG_THRESH_TRAIN": 0.5,
    "MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.5,
    "MODEL.ROI_HEAD.NMS_THRESH_TEST": 0.4,
    "MODEL.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST": 300,
    "MODEL.ROI_HEAD.AUGMENT": False,
    "MODEL.LOSS.TYPE": "OIM",
    "MODEL.LOSS.LUT_SIZE": 5532,
    "MODEL.LOSS.CQ_SIZE": 5000,
    "MODEL.LOSS.OIM_MOMENTUM": 0.5,
    "MODEL.LOSS.OIM_SCALAR": 30.0,
    "MODEL.LOSS.OIM_EPS": 0.1,
    "EVAL_PERIOD": 5,
    "EVAL_USE_GT": False,
    "EVAL_USE_CACHE": False,
    "EVAL_USE_CBGM": False,
    "CKPT_PERIOD": 20,
    "DISP_PERIOD": 1000,
    "TF_BOARD": False,
    "DEVICE": "cuda",
    "NVIDIA_DEVICE": 0,
    "SEED": 1,
    "OUTPUT_DIR": "./output",
}

# The authors' shipped configs, reconstructed from config-keys.md.
AUTHORS_PRW = """
OUTPUT_DIR: "./exps/prw_oimp"
INPUT:
  DATASET: "PRW"
  DATA_ROOT: "/workspace/dataset/PRW-v16.04.20"
MODEL:
  LOSS:
    TYPE: 'LOIM'
    OIM_EPS: 0.1
    LUT_SIZE: 482
    CQ_SIZE: 500
  ROI_HEAD:
    NORM_TYPE: 'protonorm'
"""
AUTHORS_CUHK = """
OUTPUT_DIR: "./exps/ssm_oimp"
INPUT:
  DATA_ROOT: "/workspace/dataset/CUHK-SYSU"
MODEL:
  LOSS:
    TYPE: 'LOIM'
    OIM_EPS: 0.1
  ROI_HEAD:
    NORM_TYPE: 'protonorm'
"""


def test_every_upstream_key_with_its_default():
    flat = flatten(get_default_config())
    for key, default in UPSTREAM_DEFAULTS.items():
        assert key in flat, key
        assert flat[key] == default, (key, flat[key], default)
    assert flat["MODEL.BACKBONE.NAME"] == "resnet50"
    assert flat["MODEL.BACKBONE.WEIGHTS"] == ""


@pytest.mark.parametrize(
    "text,expect",
    [
        (
            AUTHORS_PRW,
            {
                "INPUT.DATASET": "PRW",
                "MODEL.LOSS.LUT_SIZE": 482,
                "MODEL.LOSS.CQ_SIZE": 500,
                "MODEL.LOSS.TYPE": "LOIM",
                "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
                "OUTPUT_DIR": "./exps/prw_oimp",
            },
        ),
        (
            AUTHORS_CUHK,
            {
                "INPUT.DATASET": "CUHK-SYSU",
                "MODEL.LOSS.LUT_SIZE": 5532,
                "MODEL.LOSS.TYPE": "LOIM",
                "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
                "OUTPUT_DIR": "./exps/ssm_oimp",
            },
        ),
    ],
)
def test_authors_configs_load_unchanged(tmp_path, text, expect):
    f = tmp_path / "authors.yaml"
    f.write_text(text)
    flat = flatten(load_config(str(f)))
    for k, v in expect.items():
        assert flat[k] == v


def test_shipped_experiment_files_match_the_authors():
    for name, text in (("prw.yaml", AUTHORS_PRW), ("cuhk.yaml", AUTHORS_CUHK)):
        ours = flatten(load_config(str(ROOT / "experiments" / name)))
        theirs_tmp = yaml.safe_load(text)

        def walk(d, prefix=""):
            for k, v in d.items():
                if isinstance(v, dict):
                    yield from walk(v, prefix + k + ".")
                else:
                    yield prefix + k, v

        for k, v in walk(theirs_tmp):
            assert ours[k] == v, k


def test_config_with_all_keys_round_trips(tmp_path):
    cfg = get_default_config()
    f = tmp_path / "all.yaml"
    from omegaconf import OmegaConf

    f.write_text(OmegaConf.to_yaml(cfg))
    assert flatten(load_config(str(f))) == flatten(cfg)
    assert set(all_keys()) >= set(UPSTREAM_DEFAULTS)


def test_documented_command_lines_parse():
    cfg = load_config(None, ["MODEL.ROI_HEAD.AUGMENT", "True"])
    assert cfg.MODEL.ROI_HEAD.AUGMENT is True
    # As a shell passes `MODEL.ROI_HEAD.NORM_TYPE 'none' MODEL.LOSS.TYPE 'OIM'` (quotes removed) ...
    cfg = load_config(None, ["MODEL.ROI_HEAD.NORM_TYPE", "none", "MODEL.LOSS.TYPE", "OIM"])
    assert (cfg.MODEL.ROI_HEAD.NORM_TYPE, cfg.MODEL.LOSS.TYPE) == ("none", "OIM")
    # ... and with the quotes kept (e.g. from a script that does not strip them).
    cfg = load_config(None, ["MODEL.ROI_HEAD.NORM_TYPE", "'none'", "MODEL.LOSS.TYPE", "'OIM'"])
    assert (cfg.MODEL.ROI_HEAD.NORM_TYPE, cfg.MODEL.LOSS.TYPE) == ("none", "OIM")


def test_key_equals_value_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "SOLVER.BASE_LR=0.01",
            "SOLVER.LR_DECAY_MILESTONES=[3, 5]",
            "EVAL_USE_CBGM=true",
            "INPUT.DATASET=synthetic",
            "SEED=-1",
        ],
    )
    assert cfg.SOLVER.BASE_LR == 0.01 and cfg.SOLVER.LR_DECAY_MILESTONES == [3, 5]
    assert cfg.EVAL_USE_CBGM is True and cfg.INPUT.DATASET == "synthetic" and cfg.SEED == -1


@pytest.mark.parametrize(
    "opts,message",
    [
        (
            ["MODEL.ROI_HEAD.NORM_TPYE", "none"],
            "MODEL.ROI_HEAD.NORM_TPYE: unknown key; did you mean MODEL.ROI_HEAD.NORM_TYPE?",
        ),
        (
            ["MODEL.ROI_HEAD.NORM_TYPE", "protonrm"],
            "MODEL.ROI_HEAD.NORM_TYPE: invalid value 'protonrm'; expected one of: none, batchnorm, protonorm",
        ),
        (["MODEL.LOSS.TYPE=oim"], "MODEL.LOSS.TYPE: invalid value 'oim'; expected one of: OIM, LOIM"),
        (
            ["INPUT.DATASET", "Market"],
            "INPUT.DATASET: invalid value 'Market'; expected one of: CUHK-SYSU, PRW, synthetic",
        ),
        (["SOLVER.BASE_LR", "fast"], "SOLVER.BASE_LR: invalid value 'fast'; expected a number"),
        (["INPUT.MIN_SIZE", "1.5"], "INPUT.MIN_SIZE: invalid value 1.5; expected an integer"),
        (["MODEL.ROI_HEAD.AUGMENT", "maybe"], "MODEL.ROI_HEAD.AUGMENT: invalid value 'maybe'; expected a boolean"),
        (["MODEL.LOSS.OIM_EPS", "0.7"], "MODEL.LOSS.OIM_EPS: invalid value 0.7; expected a number in [0.0, 0.3]"),
        (["SEED"], "SEED: override has no value"),
    ],
)
def test_error_messages(opts, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, opts)
    assert message in str(e.value)


def test_errors_in_a_file_name_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("MODEL:\n  LOSS:\n    TPYE: OIM\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert str(e.value) == f"{f}: MODEL.LOSS.TPYE: unknown key; did you mean MODEL.LOSS.TYPE?"
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "oimnet.train", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_print_config_and_usage_errors():
    r = _cli("--cfg", "experiments/prw.yaml", "--print-config", "MODEL.ROI_HEAD.AUGMENT", "True")
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["MODEL"]["ROI_HEAD"]["AUGMENT"] is True and printed["INPUT"]["DATASET"] == "PRW"
    r = _cli("--print-config", "MODEL.ROI_HEAD.NORM_TPYE", "none")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: MODEL.ROI_HEAD.NORM_TPYE: unknown key; did you mean MODEL.ROI_HEAD.NORM_TYPE?"
    assert "Traceback" not in r.stderr
    r = _cli("--cfg", "no/such.yaml", "--print-config")
    assert r.returncode == 2 and "no/such.yaml: config file not found" in r.stderr
    r = _cli("--help")
    assert r.returncode == 0 and "--resume" in r.stdout and "OIMNet+++" in r.stdout


def test_every_key_has_a_one_line_meaning_and_ranges_name_the_key():
    from oimnet.config import DOCS

    assert set(DOCS) == set(all_keys()) and all(d and "\n" not in d for d in DOCS.values())
    for opts, message in [
        (["SOLVER.BASE_LR", "-0.01"], "SOLVER.BASE_LR: invalid value -0.01; expected a number > 0"),
        (["SOLVER.BASE_LR", "0"], "SOLVER.BASE_LR: invalid value 0.0; expected a number > 0"),
        (["MODEL.LOSS.OIM_EPS", "0.31"], "MODEL.LOSS.OIM_EPS: invalid value 0.31; expected a number in [0.0, 0.3]"),
        (["SOLVER.SGD_MOMENTUM", "1.5"], "SOLVER.SGD_MOMENTUM: invalid value 1.5; expected a number in [0.0, 1.0]"),
        (["CKPT_PERIOD", "0"], "CKPT_PERIOD: invalid value 0; expected a positive integer"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(None, opts)
        assert message in str(e.value), (opts, str(e.value))
    assert load_config(None, ["MODEL.LOSS.OIM_EPS", "0.3"]).MODEL.LOSS.OIM_EPS == 0.3


def test_setting_a_key_nothing_reads_warns(recwarn):
    from oimnet.config import ConfigWarning

    load_config(None, ["TF_BOARD", "False", "SOLVER.LW_BOX_REG", "1.0"])  # the defaults: silent
    assert not [w for w in recwarn if issubclass(w.category, ConfigWarning)]
    with pytest.warns(ConfigWarning, match=r"TF_BOARD = True has no effect: nothing reads it"):
        load_config(None, ["TF_BOARD", "True"])
