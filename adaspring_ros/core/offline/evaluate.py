"""Top-1 accuracy of a variant on a labelled split: as a torch module (training, tuning) or as
an engine runner (profiling, in the engine the variant will be served in).

The split is in memory (``data.datasets.Dataset``) or streamed (``data.folders.ImageFiles``);
its images go through THE preprocessing for the backbone's model card (default: grey,
Fashion-MNIST's normalisation).
"""

from __future__ import annotations

import torch
import torch.utils.data as tud
from torch import nn

from adaspring_ros.core.data.datasets import Dataset
from adaspring_ros.core.data.folders import batches
from adaspring_ros.core.data.transforms import InputSpec, preprocess, preprocess_tensor
from adaspring_ros.core.model.engine import Runner

__all__ = ["evaluate", "runner_accuracy"]


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | tud.Dataset, resolution: int,
             batch_size: int = 1000, card: InputSpec | None = None) -> float:
    """Top-1 accuracy of ``model`` (compact or elastic in its active variant) on ``data``, in
    eval mode, on the device the model is on; the model's training mode is restored."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    correct = total = 0
    try:
        for images, labels in batches(data, batch_size):
            logits = model(preprocess_tensor(images, resolution, card).to(device))
            correct += int((logits.argmax(1).cpu() == torch.from_numpy(labels)).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    return correct / max(1, total)


def runner_accuracy(runner: Runner, data: Dataset | tud.Dataset, resolution: int,
                    batch_size: int = 500, card: InputSpec | None = None) -> float:
    """Top-1 accuracy of an engine runner (built with a dynamic batch) on ``data``."""
    correct = total = 0
    for images, labels in batches(data, batch_size):
        logits = runner(preprocess(images, resolution, card))
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    return correct / max(1, total)
