"""The project's one training loop, used by both train scripts, the grading classifier and the labs.

Data live in memory as tensors and batches are index slices, so no Python runs per sample. Each epoch:
shuffle (seeded per epoch, so a resumed run sees the same order), forward/backward/step with a tqdm bar
showing the live loss, validate, keep the best-on-validation weights, save a resumable state.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .outputs import write_atomic
from .settings import FitSettings

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class Critic(Protocol):
    """A second player for adversarial training: it updates itself on each batch before the model's step."""

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of the critic on a batch; returns its named loss terms (logged with a ``critic_`` prefix)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@contextmanager
def deferred_interrupt():
    """Hold Ctrl-C until the block ends, so an epoch's record and its saved state never disagree."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@dataclass
class FitResult:
    """What a run did: per-epoch logs, the best epoch and its weights, and why it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    epochs_run: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_by: str = "epochs"  # epochs | time_budget | max_steps | interrupted


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, data: Split, batch_size: int, device: torch.device) -> dict[str, float]:
    """Batch-size-weighted mean of every loss term over ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size].to(device), data.y[i:i + batch_size].to(device)
        for k, v in loss_fn(model, x, y).items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(y)
    model.train(was_training)
    return {k: v / len(data) for k, v in totals.items()}


def fused_kernel(device: torch.device) -> bool | None:
    """``fused=`` for ``torch.optim.Adam`` on ``device``: the fused kernel where PyTorch has one (CPU, CUDA)."""
    return True if device.type in ("cpu", "cuda") else None


@dataclass
class FitHooks:
    """What a run adds to the plain loop: a resumable state file, augmentation, an adversarial critic, TensorBoard."""

    state_path: str | Path | None = None  # a resumable state every epoch and on Ctrl-C
    resume: bool = False  # continue from state_path
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    critic: Critic | None = None  # takes its own step on each batch before the model's
    tensorboard: str | None = None  # a log directory
    log_images: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None  # image grids for TensorBoard


def fit(model: nn.Module, loss_fn: LossFn, train: Split, valid: Split, settings: FitSettings,
        hooks: FitHooks | None = None) -> FitResult:
    """Train ``model`` with Adam and a cosine learning-rate schedule (``settings``); return the best-on-valid weights.

    ``loss_fn(model, x, y)`` returns named scalar terms including ``"loss"`` (the one minimised). Parameters with
    ``requires_grad`` off stay frozen. ``settings.fused`` uses PyTorch's fused Adam kernel on CPU and CUDA: the same
    update rule to float rounding, one kernel instead of a loop over parameters; the train scripts use it, the labs
    and the bench's yardstick keep the default loop, so their results stay as shipped.
    """
    epochs, lr, batch_size, seed, device = (settings.epochs, settings.lr, settings.batch_size, settings.seed,
                                            settings.device)
    time_budget, max_steps, keep, desc = settings.time_budget, settings.max_steps, settings.keep, settings.desc
    hooks = hooks or FitHooks()
    state_path, resume, augment, critic = hooks.state_path, hooks.resume, hooks.augment, hooks.critic
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                           weight_decay=settings.weight_decay, fused=fused_kernel(device) if settings.fused else None)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(epochs * steps_per_epoch, 1), 1.0)))
    )
    res = FitResult()
    start_epoch, elapsed_before = 0, 0.0
    state_path = Path(state_path) if state_path else None
    if resume and state_path and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["rng"])
        start_epoch, elapsed_before = st["epoch"], st["seconds"]
        res.history, res.best_epoch, res.best_valid = st["history"], st["best_epoch"], st["best_valid"]
        res.best_state, res.steps = st["best_state"], st["steps"]
        if critic is not None:
            critic.load_state_dict(st["critic"])
        tqdm.write(f"resumed {desc} from {state_path} after epoch {start_epoch}")
    elif resume:
        tqdm.write(f"--resume: no state at {state_path}, starting fresh")

    writer = None
    if hooks.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(hooks.tensorboard)

    def save_state(epoch: int) -> None:
        if state_path is None:
            return
        st = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "rng": torch.get_rng_state(), "epoch": epoch, "seconds": res.seconds, "history": res.history,
              "best_epoch": res.best_epoch, "best_valid": res.best_valid, "best_state": res.best_state,
              "steps": res.steps, **({"critic": critic.state_dict()} if critic is not None else {})}
        write_atomic(state_path, lambda p: torch.save(st, p))

    t0 = time.perf_counter() - elapsed_before
    epoch = start_epoch
    x_all, y_all = train.x.to(device), train.y.to(device)
    try:
        for epoch in range(start_epoch, epochs):
            # -- shuffle: seeded per epoch so a resumed run sees the same order ----------------
            gen = torch.Generator().manual_seed(seed * 1000 + epoch)
            order = torch.randperm(len(train), generator=gen).to(device)
            model.train()
            bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{epochs}", disable=None, leave=False)
            running: dict[str, float] = {}
            seen = 0
            for b in bar:
                idx = order[b * batch_size:(b + 1) * batch_size]
                x, y = x_all[idx], y_all[idx]
                if augment is not None:
                    x = augment(x, gen)
                # -- critic step (adversarial training): the critic learns on this batch first -----
                critic_terms = critic.step(model, x, y) if critic is not None else {}
                # -- forward / backward / step ------------------------------------------------
                terms = loss_fn(model, x, y)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                opt.step()
                sched.step()
                res.steps += 1
                # -- log ------------------------------------------------------------------------
                seen += len(idx)
                for k, v in (terms | {f"critic_{k}": v for k, v in critic_terms.items()}).items():
                    running[k] = running.get(k, 0.0) + float(v.detach()) * len(idx)
                if b % 20 == 0:
                    bar.set_postfix(loss=f"{running['loss'] / seen:.4g}")
                if max_steps is not None and res.steps >= max_steps:
                    break
            bar.close()
            # -- validate, keep the best weights, save a resumable state -----------------------
            with deferred_interrupt():
                val = evaluate(model, loss_fn, valid, max(batch_size, 500), device)
                res.seconds = time.perf_counter() - t0
                row = {"epoch": epoch + 1, "seconds": round(res.seconds, 2),
                       **{f"train_{k}": v / seen for k, v in running.items()},
                       **{f"valid_{k}": v for k, v in val.items()}}
                res.history.append(row)
                if val["loss"] < res.best_valid or keep == "last":
                    res.best_valid, res.best_epoch = val["loss"], epoch + 1
                    res.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f}, "
                           f"valid loss {val['loss']:.4f}" + "".join(
                               f", valid {k} {v:.4f}" for k, v in val.items() if k != "loss") +
                           f" ({res.seconds:.0f} s)")
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k.replace("_", "/", 1), v, epoch + 1)
                    if hooks.log_images is not None:
                        for name, grid in hooks.log_images(model).items():
                            writer.add_image(name, grid, epoch + 1)
                res.epochs_run = epoch + 1
                save_state(epoch + 1)
            if max_steps is not None and res.steps >= max_steps:
                res.stopped_by = "max_steps"
                break
            if time_budget is not None and res.seconds >= time_budget:
                res.stopped_by = "time_budget"
                break
    except KeyboardInterrupt:
        # Ctrl-C: keep what finished epochs produced; the last full epoch's state stays resumable.
        res.stopped_by = "interrupted"
        res.seconds = time.perf_counter() - t0
        tqdm.write(f"\ninterrupted after {res.epochs_run} finished epoch(s); "
                   + (f"resume with --resume (state in {state_path})" if state_path else "no state saved"))
    finally:
        if writer is not None:
            writer.close()
    if res.best_state is not None:
        model.load_state_dict(res.best_state)
    return res
