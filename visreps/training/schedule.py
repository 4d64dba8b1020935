"""The docs/method.md §2 optimiser and learning-rate schedule.

- AdamW; weight decay only on weight matrices (parameters with ≥ 2 dimensions), never on biases, BatchNorm /
  LayerNorm parameters, nor on what a timm model lists in ``no_weight_decay()`` (ViT position embedding, class
  token).
- Learning rate per epoch e (stepped once per epoch), as a factor of the peak ``lr``: linear warm-up from
  ``start`` to 1 over ``warmup`` epochs (e = 0 .. warmup−1), then cosine from 1 to ``final`` over the remaining
  ``epochs − warmup`` epochs: factor = final + (1 − final)·(1 + cos(π·(e − warmup)/(epochs − warmup)))/2.
  With the recipe (20 epochs, warm-up 2, 0.25 → 1 → 0.05): 0.25, 0.625, 1.0, 0.996, ..., 0.0536.
  This is what ``SequentialLR(LinearLR(0.25, total_iters=2), CosineAnnealingLR(T_max=18, eta_min=0.05·lr))``
  gives, written as one pure function so a resumed run recomputes it exactly.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn


def lr_factor(epoch: int, epochs: int, warmup_epochs: int = 2, start_factor: float = 0.25,
              final_factor: float = 0.05) -> float:
    """Multiplier of the peak learning rate during epoch ``epoch`` (0-based)."""
    if epoch < warmup_epochs:
        return start_factor + (1.0 - start_factor) * epoch / warmup_epochs
    decay_epochs = epochs - warmup_epochs
    if decay_epochs <= 0:
        return 1.0
    progress = min(epoch - warmup_epochs, decay_epochs) / decay_epochs
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight matrices with ``weight_decay``; biases, norms and no-decay names without."""
    skip_names: set[str] = set()
    if hasattr(model, "no_weight_decay"):
        skip_names = set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim >= 2 and name not in skip_names:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimiser(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups`` (fused on CUDA when available)."""
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, fused=on_cuda or None)


def build_scheduler(optimiser: torch.optim.Optimizer, epochs: int, warmup_epochs: int, start_factor: float,
                    final_factor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch LambdaLR of ``lr_factor`` (call ``step()`` once at the end of every epoch)."""
    factor = partial(lr_factor, epochs=epochs, warmup_epochs=warmup_epochs, start_factor=start_factor,
                     final_factor=final_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
