#!/usr/bin/env python
r"""Pretrain the mmrec foundation model.

    accelerate launch scripts/pretrain.py --config configs/default.yaml \
        [--output-dir DIR] [--resume latest] [key=value ...]
    python scripts/pretrain.py --config configs/tiny.yaml

Works on one CPU, several CPU processes (``--config_file configs/accelerate/cpu_2proc.yaml``),
one or several GPUs and several machines; prints the run summary (JSON) at the end.
"""
import sys

from mmrec.commands.training import script_main

if __name__ == "__main__":
    sys.exit(script_main("pretrain"))
