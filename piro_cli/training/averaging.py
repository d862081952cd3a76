"""An exponential moving average of the trained weights (`piro train --ema-decay`), the run's model for
validation, checkpoints and everything after training.

After every optimiser step each trained parameter's average moves towards it: avg <- decay * avg + (1 - decay) * w
(Polyak averaging, as timm's ModelEmaV2), so the average spans about 1 / (1 - decay) recent steps. Buffers (the
frozen BatchNorm statistics) are not averaged. `averaged()` puts the average into the model for a while (to
validate or save it); the raw weights the optimiser works on come back afterwards, and a checkpoint keeps them
(`raw_state`) so that a resumed run goes on exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class WeightAverage:
    """The moving average of `model`'s parameters that require gradients (named as in its state_dict)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay {decay}: give a number in (0, 1)")
        self.model, self.decay = model, decay
        self.trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.average = {name: p.detach().clone() for name, p in self.trained.items()}

    @torch.no_grad()
    def update(self) -> None:
        """After an optimiser step: move each average towards its parameter."""
        averages, weights = list(self.average.values()), [p.detach() for p in self.trained.values()]
        torch._foreach_lerp_(averages, weights, 1.0 - self.decay)

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own (raw) weights again after it."""
        raw = self.raw_state()
        with torch.no_grad():
            for name, p in self.trained.items():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            self.load_raw_state(raw)

    def raw_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.trained.items()}

    @torch.no_grad()
    def load_raw_state(self, raw: dict[str, torch.Tensor]) -> None:
        for name, p in self.trained.items():
            p.copy_(raw[name])

    @torch.no_grad()
    def resume(self, raw: dict[str, torch.Tensor] | None) -> None:
        """From a checkpoint whose model_state (already in the model) is the average: that becomes the average
        and `raw` (the checkpoint's raw_state) the weights trained on; without it the average is all there is."""
        self.average = {name: p.detach().clone() for name, p in self.trained.items()}
        if raw is not None:
            self.load_raw_state(raw)
