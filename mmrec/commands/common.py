"""Helpers shared by CLI subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mmrec.config import Config, load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config PATH`` and trailing ``key=value`` overrides."""
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. split.seed=7")


def config_from_target(target: str | None, overrides: list[str], config: str | None = None) -> Config:
    """Resolve a ``<dataset|config.yaml>`` positional into a config.

    A path ending in .yaml/.yml is a config file; anything else is a dataset name.
    """
    if target and target.endswith((".yaml", ".yml")):
        return load_config(target, overrides)
    extra = [f"data.name={target}"] if target else []
    return load_config(config, extra + list(overrides))


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout and nothing else."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
