#!/usr/bin/env python
"""Fine-tune a pretrained mmrec model on a target dataset (next-item objective).

    accelerate launch scripts/finetune.py --config configs/finetune_scientific.yaml --init-from RUN_DIR
"""
import sys

from mmrec.commands.training import script_main

if __name__ == "__main__":
    sys.exit(script_main("finetune"))
