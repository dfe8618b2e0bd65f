"""The training loop on Accelerate: one code path for 1 CPU process, N CPU processes (gloo)
and N GPUs, with accumulation, clipping, warmup + cosine/linear schedule, mixed
precision, periodic validation with early stopping, and exact resume.

Run layout (``output_dir``): a self-contained model artefact (:mod:`mmrec.artifact`) plus training state::

    artifact.json  config.yaml  items.parquet  users.parquet  split/   the artefact (written at the start)
    run.json  metrics.jsonl  summary.json  logs/                      training records (logs/: trackers)
    best/model.safetensors           the best-validation weights (what serving and later stages load)
    checkpoints/step-000000123/      model + optimizer + scheduler + counters (last K kept)

Validation and test scores come from the ``make_evaluator`` the caller passes
(:func:`mmrec.pipeline.make_trainer`): training never imports evaluation.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from mmrec import __version__
from mmrec.align.init_tower import apply_init_projections
from mmrec.artifact import ItemSpace, build_model, item_space, write_run_files
from mmrec.artifact.weights import save_weights
from mmrec.atomic import atomic_path, write_json
from mmrec.encoders.features import model_features
from mmrec.hashing import tensors_sha256
from mmrec.config import Config
from mmrec.errors import MMRecError
from mmrec.paths import runs_dir
from mmrec.train import checkpoint as ckpt
from mmrec.train import trackers
from mmrec.train.batches import EpochBatches
from mmrec.train.pairs import PairPool, build_pair_pool
from mmrec.data.prepare import prepare
from mmrec.train.setup import train_sequences

log = logging.getLogger(__name__)


def default_output_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return runs_dir() / f"{cfg.data.name}-{stage_of(cfg)}-{stamp}"


def stage_of(cfg: Config) -> str:
    """``finetune`` when the run starts from another run's weights (``train.init_from``), else ``pretrain``."""
    return "finetune" if cfg.train.init_from else "pretrain"


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """No weight decay on biases, norms, embeddings and temperatures."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "emb" in name or "pos" in name or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def param_hash(model: torch.nn.Module) -> str:
    """Short hash of all parameters (lets multi-process runs show that every replica ended identical)."""
    return tensors_sha256(model.named_parameters())[:16]


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


Metrics = Dict[str, float]
#: ``evaluate(model, role, protocol, rank=, world=, gather=) -> metrics`` (``None``: no such events)
Evaluate = Callable[..., Optional[Metrics]]
#: builds an :data:`Evaluate` for a split and its item rows; supplied by the caller (mmrec.pipeline)
MakeEvaluator = Callable[[Any, Dict[str, int], Config], Evaluate]


class Trainer:
    """Builds everything from a :class:`Config` and runs pretraining or fine-tuning.

    ``make_evaluator(split, item_row, cfg)`` returns the function that scores
    validation and test events; training does not import evaluation, so the
    caller wires the two (:func:`mmrec.pipeline.make_trainer` does).
    """

    def __init__(self, cfg: Config, output_dir: Optional[str] = None, resume: Optional[str] = None, *,
                 make_evaluator: MakeEvaluator) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs
        self.cfg = cfg
        self.make_evaluator = make_evaluator
        tc = cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        log_with = trackers.check_log_with(tc.log_with)  # a bad name is a ConfigError, not accelerate's ValueError
        out = output_dir or tc.output_dir
        if out is None and resume not in (None, "latest"):
            out = str(ckpt.resolve_resume(resume, Path(resume)).parents[1])
        if out is None:
            out = str(default_output_dir(cfg))
        out = str(Path(out).expanduser().resolve())
        self.acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_mixed_precision(tc.mixed_precision),
                               gradient_accumulation_steps=tc.grad_accum, log_with=log_with,
                               project_config=trackers.project_config(out),  # tracker files in <run>/logs
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        # every process must agree on the folder: the main one decides
        self.out = Path(self._broadcast_str(out))
        trackers.point_at(self.acc, self.out)
        self.resume = resume
        self.rank, self.world = self.acc.process_index, self.acc.num_processes

    # -- helpers ---------------------------------------------------------------------------------
    def _broadcast_str(self, s: str) -> str:
        from accelerate.utils import broadcast_object_list
        if self.acc.num_processes == 1:
            return s
        obj = [s]
        broadcast_object_list(obj)
        return obj[0]

    def _log(self, record: Dict[str, Any]) -> None:
        if not self.acc.is_main_process:
            return
        line = json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()})
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.cfg.train.log_with:
            self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def _gather_ranks(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate per-process rank tensors of different lengths (padded with -1, then dropped)."""
        t = self.acc.pad_across_processes(t.to(self.acc.device).long(), dim=0, pad_index=-1)
        allr = self.acc.gather(t).cpu()
        return allr[allr >= 0]

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        with self.acc.main_process_first():
            self.data = prepare(cfg)
            self.features = model_features(self.data.catalog, cfg.encoders, cfg.model.use_text, cfg.model.use_image)
            self.pairs: Optional[PairPool] = build_pair_pool(cfg, self.data, self.features)
        self.space: ItemSpace = item_space(self.data)
        self.sequences = train_sequences(self.data, self.space)
        if not self.sequences:
            raise MMRecError("no training sequences (every user has fewer than 2 training items)")
        torch.manual_seed(cfg.seed)  # same initial weights in every process and every run of this config
        model = build_model(cfg, self.space, self.features)
        if not self.resume:  # a resumed run gets its weights from the checkpoint
            apply_init_projections(model, cfg.model, self.features)
        if cfg.train.init_from:
            self._init_from(model, Path(cfg.train.init_from))
        self.evaluate = self.make_evaluator(self.data.split, self.space.row, cfg)
        self.batches_per_epoch = len(EpochBatches(self.sequences, cfg.model.max_len, cfg.model.causal,
                                                  cfg.loss.mask_prob, cfg.loss.last_mask_share,
                                                  cfg.train.batch_size, cfg.seed, 0, self.rank, self.world))
        steps_per_epoch = max(1, self.batches_per_epoch // cfg.train.grad_accum)
        planned = cfg.train.epochs * steps_per_epoch
        self.total_steps = min(planned, cfg.train.max_steps) if cfg.train.max_steps else planned
        opt = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
        tc = cfg.train
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_lambda(s, tc.warmup_steps, self.total_steps, tc.schedule))
        self.model, self.opt = self.acc.prepare(model, opt)
        self.state = {"step": 0, "epoch": 0, "batch": 0, "best_metric": -1.0, "best_step": -1,
                      "bad_evals": 0, "stopped_early": False, "samples": 0}
        if not self.resume and ckpt.list_checkpoints(self.out):
            raise MMRecError(f"{self.out} already holds checkpoints of another run; pass --resume latest to "
                             f"continue it, or choose a new --output-dir")
        if self.acc.is_main_process:
            self._write_run_files()
        if self.resume:
            self._load_resume()
        if cfg.train.log_with:
            self.acc.init_trackers("mmrec", config=trackers.flat_config(dataclasses.asdict(cfg)))

    def _init_from(self, model: torch.nn.Module, path: Path) -> None:
        """Fine-tuning: start from a pretrained run's best weights (ID table and shapes that differ are skipped)."""
        weights_path = path / "best" / "model.safetensors" if path.is_dir() else path
        weights = ckpt.load_weights(weights_path)
        own = model.state_dict()
        usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(weights) - set(usable))
        model.load_state_dict(usable, strict=False)
        log.info("initialised from %s (%d tensors; skipped %s)", weights_path, len(usable), skipped or "none")

    def _write_run_files(self) -> None:
        write_run_files(self.out, self.cfg, self.data, self.space, self.features)
        unwrapped = self.acc.unwrap_model(self.model)
        write_json(self.out / "run.json", {
            "mmrec_version": __version__, "dataset": self.cfg.data.name, "stage": stage_of(self.cfg),
            "prepared_fingerprint": self.data.manifest["fingerprint"],
            "text_fingerprint": self.features.text_fingerprint, "image_fingerprint": self.features.image_fingerprint,
            "text_dim": unwrapped.text_dim, "image_dim": unwrapped.image_dim, "n_items": len(self.space.item_ids),
            "n_id_items": int(self.space.trainable.sum()) if self.cfg.model.use_id else 0,
            "processes": self.world, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })

    def _load_resume(self) -> None:
        folder = ckpt.resolve_resume(self.resume, self.out)
        weights, opt_state, sched_state, state = ckpt.load_checkpoint(folder)
        unwrapped = self.acc.unwrap_model(self.model)
        try:
            missing, unexpected = unwrapped.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            shapes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
            raise ckpt.CheckpointError(f"checkpoint {folder} does not fit this model (another model.dim / "
                                       f"layers?): {shapes[:3] or str(exc).splitlines()[:1]}") from None
        if missing or unexpected:
            raise ckpt.CheckpointError(f"checkpoint {folder} does not fit this model "
                                       f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.opt.load_state_dict(opt_state)
        self.scheduler.load_state_dict(sched_state)
        self.state.update(state)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", folder, state["step"], state["epoch"],
                 state["batch"])

    # -- loop ------------------------------------------------------------------------------------
    def _pair_loss_inputs(self, step: int):
        if self.pairs is None or self.cfg.loss.contrastive_weight == 0:
            return None
        return self.pairs.batch(self.cfg.loss.contrastive_batch, self.cfg.seed, step, self.rank, self.world,
                                self.acc.device)

    def train(self) -> Dict[str, Any]:
        self.setup()
        cfg, tc, st = self.cfg, self.cfg.train, self.state
        bar = tqdm(total=self.total_steps, initial=st["step"], desc="train", disable=not self.acc.is_main_process,
                   dynamic_ncols=True)
        t0, seqs_seen = time.perf_counter(), 0
        self.eval_seconds = 0.0
        running: List[float] = []
        done = st["step"] >= self.total_steps or st["stopped_early"]
        self.model.train()
        while not done:
            epoch_batches = EpochBatches(self.sequences, cfg.model.max_len, cfg.model.causal, cfg.loss.mask_prob,
                                         cfg.loss.last_mask_share, tc.batch_size, cfg.seed, st["epoch"],
                                         self.rank, self.world)
            for b_idx, batch in enumerate(epoch_batches.iterate(st["batch"]), start=st["batch"]):
                torch.manual_seed(cfg.seed * 1_000_003 + st["step"] * 101 + b_idx % tc.grad_accum + 7919 * self.rank)
                with self.acc.accumulate(self.model):
                    pairs = self._pair_loss_inputs(st["step"])
                    gen = torch.Generator().manual_seed(cfg.seed + st["step"])
                    losses = self.model(batch.items.to(self.acc.device), batch.scored.to(self.acc.device),
                                        batch.targets.to(self.acc.device), pairs=pairs, generator=gen)
                    loss = losses["loss"]
                    self.acc.backward(loss)
                    if self.acc.sync_gradients and tc.clip_norm:
                        self.acc.clip_grad_norm_(self.model.parameters(), tc.clip_norm)
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                seqs_seen += len(batch.items) * self.world
                running.append(float(loss.detach()))
                if not self.acc.sync_gradients:
                    continue
                self.scheduler.step()
                st["step"] += 1
                st["batch"] = b_idx + 1
                st["samples"] += len(batch.items) * self.world * tc.grad_accum
                bar.update(1)
                if st["step"] % tc.log_every == 0:
                    rec = {"step": st["step"], "epoch": st["epoch"], "loss": float(np.mean(running)),
                           "lr": self.scheduler.get_last_lr()[0],
                           "seq_per_s": seqs_seen / max(1e-9, time.perf_counter() - t0)}
                    rec.update({k: float(v.detach()) for k, v in losses.items() if k != "loss"})
                    self._log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}")
                    running = []
                if st["step"] % tc.eval_every == 0 or st["step"] >= self.total_steps:
                    if self._validate():
                        st["stopped_early"] = True
                if st["step"] % tc.checkpoint_every == 0 or st["step"] >= self.total_steps or st["stopped_early"]:
                    self._checkpoint()
                if st["step"] >= self.total_steps or st["stopped_early"]:
                    done = True
                    break
            else:
                st["epoch"] += 1
                st["batch"] = 0
        bar.close()
        train_s = time.perf_counter() - t0
        self.acc.wait_for_everyone()
        summary = self._finish(train_s, seqs_seen)
        if tc.log_with:
            self.acc.end_training()
        return summary

    def _validate(self) -> bool:
        """Validation NDCG@10; saves ``best/`` on improvement. Returns True when patience runs out."""
        cfg, st = self.cfg, self.state
        unwrapped = self.acc.unwrap_model(self.model)
        t_eval = time.perf_counter()
        metrics = self.evaluate(unwrapped, "valid", "warm", rank=self.rank, world=self.world,
                                gather=self._gather_ranks)
        if metrics is None:
            raise MMRecError("no warm validation events to select the best model on")
        self.model.train()
        self.eval_seconds += time.perf_counter() - t_eval
        key = "ndcg@10" if "ndcg@10" in metrics else f"ndcg@{cfg.eval.ks[0]}"
        value = metrics[key]
        self._log({"step": st["step"], "epoch": st["epoch"], **{f"valid_{k}": v for k, v in metrics.items()}})
        if value > st["best_metric"]:
            st.update(best_metric=value, best_step=st["step"], bad_evals=0)
            if self.acc.is_main_process:
                best = self.out / "best"
                best.mkdir(parents=True, exist_ok=True)
                with atomic_path(best / "model.safetensors") as tmp:
                    save_weights(tmp, unwrapped.state_dict(), {"step": str(st["step"])})
                write_json(best / "meta.json", {"step": st["step"], "valid": metrics})
        else:
            st["bad_evals"] += 1
        log.info("step %d: valid %s=%.4f (best %.4f at step %d)", st["step"], key, value, st["best_metric"],
                 st["best_step"])
        return st["bad_evals"] >= cfg.train.patience

    def _checkpoint(self) -> None:
        if self.acc.is_main_process:
            unwrapped = self.acc.unwrap_model(self.model)
            folder = ckpt.step_dir(self.out, self.state["step"])
            ckpt.save_checkpoint(folder, unwrapped.state_dict(), self.opt.state_dict(), self.scheduler.state_dict(),
                                 dict(self.state))
            ckpt.prune(self.out, self.cfg.train.keep_last)
        self.acc.wait_for_everyone()

    def _finish(self, train_s: float, seqs_seen: int) -> Dict[str, Any]:
        """Evaluate the best-validation weights once on the test split (warm and cold)."""
        cfg = self.cfg
        unwrapped = self.acc.unwrap_model(self.model)
        best = self.out / "best" / "model.safetensors"
        if best.is_file():
            unwrapped.load_state_dict(ckpt.load_weights(best), strict=False)
        results: Dict[str, Any] = {}
        for protocol in cfg.eval.protocols:
            metrics = self.evaluate(unwrapped, "test", protocol, rank=self.rank, world=self.world,
                                    gather=self._gather_ranks)
            if metrics is not None:
                results[protocol] = metrics
        from accelerate.utils import gather_object
        hashes = gather_object([param_hash(self.acc.unwrap_model(self.model))]) if self.world > 1 else \
            [param_hash(unwrapped)]
        summary = {
            "param_hash_per_process": hashes,
            "output_dir": str(self.out), "dataset": cfg.data.name, "stage": stage_of(cfg),
            "steps": self.state["step"], "epochs_started": self.state["epoch"] + 1,
            "best_step": self.state["best_step"], "best_valid_ndcg@10": self.state["best_metric"],
            "stopped_early": self.state["stopped_early"], "train_seconds": round(train_s, 2),
            "validation_seconds": round(self.eval_seconds, 2),
            "sequences_per_s": round(seqs_seen / max(train_s - self.eval_seconds, 1e-9), 2),
            "processes": self.world,
            "device": str(self.acc.device), "mixed_precision": self.acc.mixed_precision,
            "exclude_history": cfg.eval.exclude_history, "test": results,
        }
        if self.acc.is_main_process:
            write_json(self.out / "summary.json", summary)
        return summary
