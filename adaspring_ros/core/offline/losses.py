"""Distillation losses: how a student variant learns from a teacher's soft outputs.

``kl`` is KL(teacher || student), the usual in-place distillation of the sandwich rule;
``alpha`` is AlphaNet's adaptive alpha-divergence (Wang et al. 2021), which also penalises a
student that is confident where the teacher is not. Variant tuning uses the tempered KL of
Hinton et al. on the teacher's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DISTILL_LOSSES",
    "alpha_divergence",
    "adaptive_alpha_loss",
    "student_distillation",
    "distillation_loss",
]

DISTILL_LOSSES = ("kl", "alpha")


def alpha_divergence(student_logits: Tensor, teacher_prob: Tensor, alpha: float,
                     clip: float = 5.0) -> tuple[Tensor, Tensor]:
    """Per-sample alpha-divergence D_alpha(p || q) of the student ``q`` from the teacher ``p``,
    and a surrogate whose gradient (through the student only) is that of D_alpha.

    D_alpha = sum_i q_i f(p_i / q_i) with f(t) = (t^alpha - 1) / (alpha (alpha - 1)); alpha = 1 is
    KL(p || q), the usual distillation loss, which averages over the teacher's modes; negative
    alpha penalises a student that is confident where the teacher is not. The importance weights
    (p/q)^alpha are clipped at ``clip`` so that one near-zero student probability cannot blow up
    the gradient (AlphaNet, Wang et al. 2021).
    """
    log_q = student_logits.log_softmax(1)
    q = log_q.detach().exp()
    p = teacher_prob.detach()
    if abs(alpha - 1.0) < 1e-6:
        value = (p * (p.clamp_min(1e-12).log() - log_q.detach())).sum(1)
        rho = p / q
    else:
        weight = (p / q).pow(alpha).clamp(max=clip)
        base = 1.0 / (alpha * (alpha - 1.0))
        value = (q * (weight - 1.0)).sum(1) * base
        rho = weight / alpha + base
    # d/dlogits sum_i q_i f(p_i/q_i) = -sum_i q_i rho_i dlog q_i with rho = t^alpha/alpha + base.
    surrogate = -(q * rho * log_q).sum(1)
    return value, surrogate


def adaptive_alpha_loss(student_logits: Tensor, teacher_prob: Tensor, alpha_min: float = -1.0,
                        alpha_max: float = 1.0, clip: float = 5.0) -> Tensor:
    """AlphaNet's distillation loss: per sample, the larger of D_alpha_min and D_alpha_max, so
    the student is pushed both to cover the teacher's modes and not to be over-confident;
    batch mean of the matching surrogate (its value is not the divergence, its gradient is)."""
    low, low_grad = alpha_divergence(student_logits, teacher_prob, alpha_min, clip)
    high, high_grad = alpha_divergence(student_logits, teacher_prob, alpha_max, clip)
    return torch.where(low > high, low_grad, high_grad).mean()


def student_distillation(student_logits: Tensor, teacher_prob: Tensor, kind: str = "kl"
                         ) -> Tensor:
    """A sandwich student's loss against the teacher's probabilities: ``kind`` is one of
    ``DISTILL_LOSSES`` (batch mean)."""
    if kind == "alpha":
        return adaptive_alpha_loss(student_logits, teacher_prob)
    if kind != "kl":
        raise ValueError(f"distillation loss must be one of {DISTILL_LOSSES}, got {kind!r}")
    return F.kl_div(student_logits.log_softmax(1), teacher_prob, reduction="batchmean")


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) of the softened logits, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)
