"""Top-1 accuracy of a variant on a labelled split: as a torch module (training, tuning) or as
an engine runner (profiling, in the engine the variant will be served in)."""

from __future__ import annotations

import torch
from torch import nn

from adaspring_ros.core.data.datasets import Dataset
from adaspring_ros.core.data.transforms import preprocess, preprocess_tensor
from adaspring_ros.core.model.engine import Runner

__all__ = ["evaluate", "runner_accuracy"]


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, resolution: int, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (compact or elastic in its active variant) on ``data``, in
    eval mode, on the device the model is on; the model's training mode is restored."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    try:
        for i in range(0, len(data), batch_size):
            logits = model(preprocess_tensor(data.images[i:i + batch_size], resolution).to(device))
            correct += int((logits.argmax(1).cpu()
                            == torch.from_numpy(data.labels[i:i + batch_size])).sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(data))


def runner_accuracy(runner: Runner, data: Dataset, resolution: int, batch_size: int = 500
                    ) -> float:
    """Top-1 accuracy of an engine runner (built with a dynamic batch) on ``data``."""
    correct = 0
    for i in range(0, len(data), batch_size):
        logits = runner(preprocess(data.images[i:i + batch_size], resolution))
        correct += int((logits.argmax(1) == data.labels[i:i + batch_size]).sum())
    return correct / max(1, len(data))
