"""SGD with momentum and weight decay under a cosine-annealed learning rate: what
`torch.optim.SGD(fused=True)` stepped by `torch.optim.lr_scheduler.CosineAnnealingLR` computes,
over the same fused kernel, bit for bit (tests/test_sgd.py steps both side by side).

Written out because every call into torch.optim imports torch._dynamo first, which takes 1.5 s of
CPU at the start of each training job: most of a job's time on small data, and a cost paid again
by every job of a search.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch


def fused_step(
    group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor], first_step: bool
) -> None:
    """One step of `params` (same device and dtype) by torch's fused SGD kernel, at `group`'s
    learning rate, momentum and weight decay (torch.optim's defaults for the rest); `buffers`
    their momentum (none without momentum), set to the gradient on `first_step`."""
    torch._fused_sgd_(
        params,
        grads,
        buffers,
        weight_decay=group["weight_decay"],
        momentum=group["momentum"],
        lr=group["lr"],
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=first_step,
    )


class CosineAnnealedSGD:
    """Parameter groups as torch.optim takes them (`params`, `lr`, and optionally `momentum`,
    `weight_decay`); the momentum buffers in `state[param]["momentum_buffer"]`, as torch.optim
    keeps them. `step()` steps every parameter that has a gradient; `anneal()`, once an epoch,
    moves every group's learning rate along the cosine from its initial value to 0 at `epochs`."""

    def __init__(self, groups: list[dict], epochs: int):
        self.epochs = epochs
        self.annealed = 0  # how many times anneal() was called: CosineAnnealingLR's last_epoch
        self.param_groups = []
        for group in groups:
            lr = float(group["lr"])
            self.param_groups.append(
                {
                    "params": list(group["params"]),
                    "lr": lr,
                    "initial_lr": lr,
                    "momentum": float(group.get("momentum", 0.0)),
                    "weight_decay": float(group.get("weight_decay", 0.0)),
                }
            )
        self.state: defaultdict[torch.Tensor, dict] = defaultdict(dict)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            buffers, first_step = self.momentum_buffers(params) if group["momentum"] != 0 else (None, False)
            by_kind: dict[tuple, list[int]] = defaultdict(list)
            for i, p in enumerate(params):
                by_kind[(p.device, p.dtype)].append(i)
            for same_kind in by_kind.values():
                fused_step(
                    group,
                    [params[i] for i in same_kind],
                    [params[i].grad for i in same_kind],
                    [buffers[i] for i in same_kind] if buffers else [],
                    first_step,
                )

    def momentum_buffers(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
        """The momentum buffers of `params`, and whether this is their first step, for which they
        are made here (uninitialised: the kernel sets each to the gradient)."""
        first_step = all("momentum_buffer" not in self.state[p] for p in params)
        if first_step:
            for p in params:
                self.state[p]["momentum_buffer"] = torch.empty_like(p)
        return [self.state[p]["momentum_buffer"] for p in params], first_step

    def anneal(self) -> None:
        """CosineAnnealingLR's step (eta_min 0), in its recursive form: each learning rate is
        scaled by (1 + cos(π·t/T)) / (1 + cos(π·(t−1)/T)) at step t of T, which rounds otherwise
        than the closed form ½·lr₀·(1 + cos(π·t/T))."""
        self.annealed += 1
        t, T = self.annealed, self.epochs
        for group in self.param_groups:
            if (t - 1 - T) % (2 * T) == 0:  # past the end, where the recursion would divide by 0
                group["lr"] = group["lr"] + group["initial_lr"] * (1 - math.cos(math.pi / T)) / 2
            else:
                group["lr"] = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * group["lr"]

    def state_dict(self) -> dict:
        """For a checkpoint: the learning rates, the annealing's position and the momentum buffers
        (by position among all groups' parameters)."""
        params = [p for group in self.param_groups for p in group["params"]]
        return {
            "lr": [group["lr"] for group in self.param_groups],
            "annealed": self.annealed,
            "momentum_buffer": {i: self.state[p]["momentum_buffer"] for i, p in enumerate(params) if self.state[p]},
        }

    def load_state_dict(self, saved: dict) -> None:
        """From state_dict; the momentum buffers are copied, so that none stays a view of a
        checkpoint file that torch.load mapped into memory."""
        for group, lr in zip(self.param_groups, saved["lr"], strict=True):
            group["lr"] = lr
        self.annealed = saved["annealed"]
        params = [p for group in self.param_groups for p in group["params"]]
        self.state.clear()
        for i, buffer in saved["momentum_buffer"].items():
            self.state[params[i]]["momentum_buffer"] = buffer.to(params[i].device, copy=True)
