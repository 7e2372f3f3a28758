"""Shared command-line plumbing: usage errors exit 2 with one clear line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from oimnet.config import ConfigError, load_config

OVERRIDES_HELP = (
    "config overrides, upstream style `KEY VALUE` pairs "
    "(e.g. MODEL.ROI_HEAD.NORM_TYPE 'none' MODEL.LOSS.TYPE 'OIM') or KEY=VALUE"
)


def usage_error(message: str) -> NoReturn:
    """Print `error: <message>` to stderr and exit with status 2 (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def config_from_args(cfg_file: str | None, overrides: list[str]):
    """load_config with ConfigError turned into a usage error."""
    try:
        return load_config(cfg_file, overrides)
    except ConfigError as e:
        usage_error(str(e))


def add_config_args(parser: argparse.ArgumentParser, cfg_required: bool = False) -> None:
    parser.add_argument(
        "--cfg", metavar="FILE", required=cfg_required, help="YAML config (the authors' files work as is)"
    )
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help=OVERRIDES_HELP)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse with options and KEY VALUE overrides in any order (``--resume`` may follow them)."""
    return parser.parse_intermixed_args(argv)
