"""Deep variational metric learning (DVML; Lin et al., ECCV 2018) for the object space (`piro train --dvml`).

DVML separates what identifies a class (its centre, the "invariant" part z_I) from the variation inside the
class (z_V), models z_V as a Gaussian N(mu(x), sigma(x)^2) per sample, and trains the metric loss on synthetic
embeddings z_I + z_V as well as on z_I; a KL term keeps z_V close to its prior and a decoder reconstructing
the backbone feature from z_I + z_V makes z_V carry the variation (here: the pose) rather than noise.

In piro: z_I is the single-view object embedding (unit length); mu and log sigma^2 come from a linear encoder on
the view's backbone feature; z_V = (mu + sigma * eps) * variance_scale / sqrt(D), so a sample from the N(0, I)
prior has length about `variance_scale` (0.25 by default: the object clustering margin alpha, i.e. the spread
an object's views are allowed); a synthetic view is L2norm(z_I + z_V); the decoder is linear. Only training
uses the branch: embeddings and evaluation use z_I, so checkpoints of DVML runs embed like any other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class VariationalBranch(torch.nn.Module):
    def __init__(self, feat_dim: int, dim: int, variance_scale: float = 0.25) -> None:
        super().__init__()
        if variance_scale <= 0:
            raise ValueError(f"variance_scale must be > 0, got {variance_scale}")
        self.encoder = torch.nn.Linear(feat_dim, 2 * dim)  # -> (mu, log sigma^2)
        self.decoder = torch.nn.Linear(dim, feat_dim)
        self.scale = variance_scale / math.sqrt(dim)

    def forward(self, feats: Tensor, centre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """feats (..., F) backbone features, centre (..., D) their unit object embeddings z_I.

        Returns (synthetic (..., D) unit embeddings, KL divergence to N(0, I) averaged over samples and
        dimensions, mean squared reconstruction error of the (detached) features).
        """
        mu, log_var = self.encoder(feats).chunk(2, dim=-1)
        log_var = log_var.clamp(-10.0, 10.0)  # exp() of an unbounded output can overflow early in training
        variation = (mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)) * self.scale
        combined = centre + variation
        synthetic = F.normalize(combined, dim=-1)
        kl = -0.5 * torch.mean(1 + log_var - mu.pow(2) - log_var.exp())
        reconstruction = F.mse_loss(self.decoder(combined), feats.detach())
        return synthetic, kl, reconstruction
