"""The knowledge-distillation baseline for the same pair and data as the bridge.

The student is the target backbone (from its pretrained weights) plus a fresh linear head, all of it
trained on the paired windows' *target* signal to match the source model's soft labels on the *source*
signal: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``. Like the bridge it sees no labels; its
best epoch is chosen by the same loss on the validation subjects' paired windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge_bridge.fitting import FitConfig, FitResult, fit, predict
from edge_bridge.models.backbone import Backbone


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss, scaled by ``T^2`` so its gradients do not shrink with the temperature."""
    log_p = nn.functional.log_softmax(student_logits / temperature, dim=1)  # (B, K)
    q = nn.functional.softmax(teacher_logits / temperature, dim=1)  # (B, K)
    return nn.functional.kl_div(log_p, q, reduction="batchmean") * temperature**2


def fit_kd(student: Backbone, x_target: np.ndarray, teacher_logits: np.ndarray, x_val: np.ndarray,
           teacher_val: np.ndarray, config: FitConfig | None = None, *, temperature: float = 2.0,
           progress: bool = False) -> FitResult:
    """Train ``student`` (every parameter) on soft labels; best epoch by validation KD loss (no labels)."""
    cfg = config or FitConfig()
    t_val = torch.as_tensor(teacher_val, dtype=torch.float32)

    def score(m: nn.Module) -> float:
        s = torch.as_tensor(predict(m, x_val), dtype=torch.float32)
        return -float(kd_loss(s, t_val, temperature))

    for p in student.parameters():
        p.requires_grad_(True)
    teacher = torch.as_tensor(teacher_logits, dtype=torch.float32)
    return fit(student, x_target, teacher, lambda s, t: kd_loss(s, t, temperature), score, cfg,
               progress=progress, desc="kd student")
