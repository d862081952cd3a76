"""Self-attention over the views of a view set (PAN's A_obj / A_cat, METHOD.md section 2)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ViewSetAttention(nn.Module):
    """One layer, one head self-attention over the views of a set; dropout 0.25, residual connection and LayerNorm,
    NO positional encoding (a view set is unordered). Input (B, V, D) -> (B, V, D); also returns the (B, V, V)
    attention weights (row i: how much view i attends to each view; rows sum to 1).

    As in the authors' released code: out = LayerNorm(x + Dropout(W_o(softmax(Q K^T / sqrt(D)) V))), i.e. post-norm,
    dropout on the projected attention output (not on the attention weights), no feed-forward block. Without
    positional encoding the layer is permutation-equivariant: permuting the views permutes the output rows.
    """

    def __init__(self, dim: int, dropout: float = 0.25) -> None:
        super().__init__()
        self.dim = dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        # initialisation of the released code: N(0, sqrt(2 / (d_model + d_k))) for Q, K, V; Xavier-normal for the output
        std = math.sqrt(2.0 / (dim + dim))
        for layer in (self.q, self.k, self.v):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
        nn.init.xavier_normal_(self.out.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"ViewSetAttention expects (B, V, {self.dim}), got {tuple(x.shape)}")
        q, k, v = self.q(x), self.k(x), self.v(x)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.dim), dim=-1)  # (B, V, V)
        context = self.dropout(self.out(weights @ v))
        return self.norm(x + context), weights
