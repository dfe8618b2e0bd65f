#!/usr/bin/env python
"""Train and evaluate one RecBole sequential model; runs INSIDE the RecBole virtual environment.

Called by ``scripts/bench_vs_recbole.py`` (never imports mmrec: RecBole 1.2.1
needs ``numpy<2`` and an older torch than mmrec's environment). Writes one
JSON with the test metrics, timings and the test/valid targets RecBole
evaluated (``{user: {item, hist_len}}``) so the caller can prove RecBole saw
our exact split.

RecBole saves its checkpoint with ``torch.save`` of a dict holding its config
object, and reloads it with a plain ``torch.load``; torch >= 2.6 defaults to
``weights_only=True`` and refuses it. We restore the old default for this
process only (RecBole's own checkpoint, written by this same process).
"""
import argparse
import functools
import json
import os
import sys
import time

import torch

_orig_load = torch.load


@functools.wraps(_orig_load)
def _load(*args, **kwargs):
    kwargs.setdefault("weights_only", False)
    return _orig_load(*args, **kwargs)


torch.load = _load


def _targets(loader, dataset_for_tokens):
    ds = loader._dataset
    inter = ds.inter_feat
    uids = inter[ds.uid_field].numpy()
    iids = inter[ds.iid_field].numpy()
    lens = inter[ds.item_list_length_field].numpy()
    u_tok = dataset_for_tokens.id2token(ds.uid_field, uids)
    i_tok = dataset_for_tokens.id2token(ds.iid_field, iids)
    return {str(u): {"item": str(i), "hist_len": int(n)} for u, i, n in zip(u_tok, i_tok, lens)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, choices=("SASRec", "BERT4Rec"))
    p.add_argument("--data-path", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--stopping-step", type=int, default=3)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    config_dict = {
        "data_path": args.data_path, "checkpoint_dir": args.checkpoint_dir,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "loss_type": "CE", "train_neg_sample_args": None,
        "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
        "epochs": args.epochs, "stopping_step": args.stopping_step, "train_batch_size": args.batch_size,
        "eval_batch_size": 1024, "metrics": ["Recall", "NDCG", "MRR", "Hit"], "topk": [10, 20],
        "valid_metric": "NDCG@10", "use_gpu": torch.cuda.is_available(), "show_progress": False,
        "log_wandb": False, "save_dataset": False, "save_dataloaders": False, "seed": 2020,
    }
    sys.argv = sys.argv[:1]  # RecBole's Config also parses `--key=value` from the command line; ours are not for it
    config = Config(model=args.model, dataset=args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # RecBole's per-epoch timings and validation scores go to the log the caller keeps
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    t0 = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - t0
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    epochs_run = len(trainer.train_loss_dict)
    n_train = len(train_data._dataset)
    out = {
        "model": args.model, "test": {k: float(v) for k, v in dict(test_result).items()},
        "best_valid": {k: float(v) for k, v in dict(best_valid_result or {}).items()},
        "epochs_run": epochs_run, "train_sequences_per_epoch": n_train,
        "fit_seconds": round(fit_s, 2),
        "sequences_per_s": round(n_train * epochs_run / max(fit_s, 1e-9), 2),
        "n_items": int(dataset.item_num - 1), "n_users": int(dataset.user_num - 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "test_targets": _targets(test_data, dataset), "valid_targets": _targets(valid_data, dataset),
    }
    import recbole
    out["recbole"] = recbole.__version__
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    # the checkpoint is only needed for load_best_model; remove it so repeated runs don't pile up
    saved = getattr(trainer, "saved_model_file", None)
    if saved and os.path.isfile(saved):
        os.remove(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
