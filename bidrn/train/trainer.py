"""The training loop: one process or many (torchrun + DistributedDataParallel), resumable step for step.

Determinism is by construction: the sample at global position p of the run is ``dataset[p]`` (sources are
deterministic per index, augmentation seeded by p), step s consumes positions [s G, (s + 1) G) for a global
batch G, and each process takes its contiguous slice, split again into grad_accum micro-batches. So a resumed
run replays the same batches, and N processes see exactly what one process with N micro-batches sees (BN
statistics are per micro-batch in both; use ``sync_bn`` on CUDA for cross-process statistics).
"""
from __future__ import annotations

import csv
import io
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bidrn.io import atomic_write
from bidrn.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from bidrn.train.config import TrainConfig, load_config
from bidrn.train.losses import sample_joint_index, whole_body_loss

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
LOG = "log.csv"
PLOT = "loss.png"


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    out_dir: Path


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _method_hooks(model: nn.Module):
    """The baselines' schedule hooks (ReCU's tau, FDA's Fourier terms, BNN's weight clipping), if any."""
    from bidrn.nn.baselines import BASELINES

    cfg = model.cfg
    return [BASELINES[m] for m in {cfg.body.method, cfg.hand.method, cfg.face.method} if m in BASELINES]


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    return cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].astype(np.int64).tolist(),
            "python": random.getstate()[1]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))


class Trainer:
    """Builds the model, data and optimizer from a TrainConfig and runs (or resumes) the schedule."""

    def __init__(self, config, resume: bool = False, progress: bool = True):
        from bidrn.body import load_body_model
        from bidrn.models.registry import create_model
        from bidrn.train.data import build_train_dataset, build_val_dataset

        self.cfg = load_config(config)
        self.rank, self.world = _dist_info()
        self.device = _device(self.rank)
        self.out = Path(self.cfg.out)
        self.progress = progress and self.rank == 0
        cfg = self.cfg
        if cfg.batch_size % (self.world * cfg.grad_accum):
            raise ValueError(f"batch_size {cfg.batch_size} must split evenly over {self.world} processes x "
                             f"{cfg.grad_accum} micro-batches")
        self.micro = cfg.batch_size // (self.world * cfg.grad_accum)

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.body_model = load_body_model(cfg.body_model).to(self.device)
        self.model = create_model(cfg.model).to(self.device)
        self.model_cfg = self.model.cfg
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.joint_index = sample_joint_index(self.body_model).to(self.device)
        self.dataset = build_train_dataset(cfg, self.model_cfg.input_size, self.body_model)
        self.val_dataset = build_val_dataset(cfg, self.model_cfg.input_size, self.body_model)
        self.steps_per_epoch = cfg.steps_per_epoch or max(1, len(self.dataset) // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.hooks = _method_hooks(self.model)
        self.step, self.history = 0, []
        self._data_epoch: int | None = None
        self.model.attach_body_model(self.body_model)  # before DDP wraps it: the mesh is part of every step

        if cfg.sync_bn and self.world > 1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if resume:
            self._resume()

    # -- state -----------------------------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}; start without --resume")
        state = load_checkpoint(path, map_location=self.device)
        self.model.load_network_state(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        _set_rng_state(state["rng"])

    def _save(self) -> None:
        if self.rank != 0:
            return
        state = {"model": self.model.network_state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "history": self.history, "rng": _rng_state(), "config": self.cfg.to_dict()}
        save_checkpoint(state, self.out / CHECKPOINT)
        self._write_log()

    def _write_log(self) -> None:
        rows = [h for h in self.history if "loss" in h]
        if not rows:
            return
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        def write(fh):
            text = io.TextIOWrapper(fh, newline="")
            writer = csv.DictWriter(text, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
            text.flush()
            text.detach()

        atomic_write(self.out / LOG, write)
        from bidrn.train.plots import plot_history

        plot_history(self.history, self.out / PLOT)

    # -- data ------------------------------------------------------------------------------------------------
    def _micro_batches(self, step: int):
        """This process's micro-batches of global step ``step``: lists of global sample positions."""
        start = step * self.cfg.batch_size + self.rank * self.micro * self.cfg.grad_accum
        for m in range(self.cfg.grad_accum):
            first = start + m * self.micro
            yield [p for p in range(first, first + self.micro)]

    def _collate(self, positions: list[int]) -> dict:
        epoch = positions[0] // max(len(self.dataset), 1)
        if hasattr(self.dataset, "set_epoch") and self._data_epoch != epoch:
            self.dataset.set_epoch(epoch)  # new augmentation / mixing plan: a function of (seed, epoch) only
            self._data_epoch = epoch
        index = [p % len(self.dataset) for p in positions]
        batched = getattr(self.dataset, "__getitems__", None)  # the synthetic engine renders a batch at once
        samples = batched(index) if batched else [self.dataset[i] for i in index]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0] if torch.is_tensor(samples[0][k])}

    # -- loop ------------------------------------------------------------------------------------------------
    def _forward_loss(self, batch: dict) -> dict:
        img = batch["img"]
        if self.cfg.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.cfg.amp and self.device.type == "cuda" else nullcontext()
        with amp:
            out = self.net(img)
        return whole_body_loss({k: v.float() for k, v in out.items()}, batch, self.model_cfg, self.joint_index,
                               self.cfg.pose_loss)

    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            cfg.save(self.out / "config.yaml")
        self.model.train()
        last = self.total_steps if cfg.max_steps is None else min(self.total_steps, cfg.max_steps)
        bar = tqdm(total=last, initial=self.step, disable=not self.progress, desc=cfg.model, unit="step")
        t0, seen = time.perf_counter(), 0
        while self.step < last:
            epoch = self.step // self.steps_per_epoch
            if self.step % self.steps_per_epoch == 0:
                for hook in self.hooks:
                    hook.on_epoch(self.model, epoch, cfg.epochs)
            lr = cfg.lr * _lr_factor(cfg, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            terms = self._train_step()
            self.step += 1
            seen += cfg.batch_size
            if self.step % cfg.log_every == 0 or self.step == last:
                rate = seen / (time.perf_counter() - t0)
                row = {"step": self.step, "epoch": epoch, "lr": lr, "images_per_s": round(rate, 2),
                       **{k: round(v, 6) for k, v in terms.items()}}
                self.history.append(row)
                bar.set_postfix(loss=f"{terms['loss']:.4f}", img_s=f"{rate:.1f}")
                t0, seen = time.perf_counter(), 0
            at_epoch_end = self.step % self.steps_per_epoch == 0
            if cfg.val_every and at_epoch_end and (epoch + 1) % cfg.val_every == 0 and self.val_dataset is not None:
                self._validate(epoch)
            if self.step % cfg.ckpt_every == 0 or self.step == last or at_epoch_end:
                self._save()
            bar.update(1)
        bar.close()
        if self.rank == 0:
            save_weights(self.model, self.out / WEIGHTS, {"config": self.model_cfg.name, "steps": str(self.step)})
        return TrainResult(self.model, self.history, self.out)

    def _train_step(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        micro_batches = list(self._micro_batches(self.step))
        for i, positions in enumerate(micro_batches):
            batch = _to(self._collate(positions), self.device)
            sync = self.world == 1 or i == len(micro_batches) - 1
            with nullcontext() if sync else self.net.no_sync():
                losses = self._forward_loss(batch)
                (losses["total"] / len(micro_batches)).backward()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / len(micro_batches)
        grads = [p.grad.detach().sum() for p in self.model.parameters() if p.grad is not None]
        if not torch.isfinite(torch.stack(grads)).all():
            raise FloatingPointError(f"non-finite gradient at step {self.step}; lower the learning rate")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for hook in self.hooks:
            hook.after_optimizer_step(self.model)
        if self.world > 1:  # log the loss of the global batch, as one process would see it
            vec = torch.tensor(list(totals.values()), dtype=torch.float64)
            dist.all_reduce(vec)
            totals = dict(zip(totals, (vec / self.world).tolist()))
        totals["loss"] = totals.pop("total")
        return totals

    def _validate(self, epoch: int) -> None:
        if self.rank != 0:
            return
        from bidrn.eval.evaluate import evaluate

        metrics = evaluate(self.model, self.val_dataset, self.body_model, batch_size=8, device=self.device)
        self.history.append({"step": self.step, "epoch": epoch, **{f"val_{k}": round(v, 3) for k, v in metrics.items()}})
        self.model.train()


def train(config, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train from a TrainConfig, a dict or a YAML path; returns the model, its history and the output folder."""
    return Trainer(config, resume=resume, progress=progress).run()
