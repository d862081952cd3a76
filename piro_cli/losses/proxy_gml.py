"""ProxyGML (Zhu et al., "Fewer is More: A Deep Graph Metric Learning Perspective Using Fewer Proxies",
NeurIPS 2020), as the paper's equations and the authors' released loss define it.

Each class c keeps N trainable proxies p_{c,1..N} (L2-normalised when used). For a batch of L2-normalised
embeddings x_i:

1. a directed similarity graph from samples to proxies: s_ij = x_i . p_j;
2. a sub-graph per sample: its own class's N proxies plus the most similar others, k = ceil(r * C * N) proxies in
   all (the own class's come first, the rest by similarity); the other edges are cut (mask m_ij);
3. reverse label propagation: class scores z_ic = sum_j m_ij s_ij [class(j) = c], and a softmax over the classes
   that keep at least one edge (z_ic != 0): P(c | x_i) = exp(z_ic) / sum over those classes;
   L_classify = mean_i -log P(y_i | x_i);
4. the proxy regulariser: each proxy p_j classified by its similarities to every class's proxies,
   L_reg = cross-entropy((P P^T) Y, class(j)) with Y the proxies' one-hot classes;
   L = L_classify + lambda * L_reg.

The paper's settings for CUB-200 and Cars-196 are the defaults here: N = 12 proxies per class, r = 0.05,
lambda = 0.3. For many classes with few samples each (its Stanford Online Products, and ObjectPI's object
identities) the paper uses N = 1, lambda = 0 (`--gml-proxies 1 --gml-reg 0`; docs/BENCHMARKS.md measures that). The paper reports Recall@1 of 66.6 on CUB-200 and
85.5 on Cars-196 (BN-Inception, 512-d). One difference: the released code trains the proxies with their own
learning rate (0.03); here they share the model's. And where r * C * N <= N (few classes), the sub-graph keeps one
proxy of another class all the same: with its own class's alone the released loss is identically 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import DEFAULT_NEIGHBOURHOOD, DEFAULT_PROXIES, DEFAULT_REGULARISATION  # noqa: E402,F401 (re-exported)


class ProxyGMLLoss(torch.nn.Module):
    """forward(embeddings (M, D), labels (M,) in [0, num_classes)) -> scalar (L_classify + lambda * L_reg)."""

    def __init__(
        self, num_classes: int, dim: int, proxies_per_class: int = DEFAULT_PROXIES,
        neighbourhood: float = DEFAULT_NEIGHBOURHOOD, regularisation: float = DEFAULT_REGULARISATION,
    ) -> None:  # fmt: skip
        super().__init__()
        if num_classes < 1 or proxies_per_class < 1:
            raise ValueError(f"ProxyGML needs at least one class and one proxy per class, got {num_classes} and {proxies_per_class}")
        if not 0 < neighbourhood <= 1:
            raise ValueError(f"ProxyGML's neighbourhood r must be in (0, 1], got {neighbourhood}")
        if not (math.isfinite(regularisation) and regularisation >= 0):
            raise ValueError(f"ProxyGML's regularisation weight must be >= 0, got {regularisation}")
        self.num_classes, self.proxies_per_class = num_classes, proxies_per_class
        self.neighbourhood, self.regularisation = neighbourhood, regularisation
        self.proxies = torch.nn.Parameter(torch.empty(num_classes * proxies_per_class, dim))
        torch.nn.init.kaiming_uniform_(self.proxies, a=math.sqrt(5))  # the released initialisation
        self.register_buffer("proxy_class", torch.arange(num_classes).repeat_interleave(proxies_per_class), persistent=False)

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, proxies_per_class={self.proxies_per_class}, r={self.neighbourhood}, lambda={self.regularisation}"

    def neighbours(self) -> int:
        """k: the proxies each sample keeps (its own class's among them); at least one of another class, since with
        only its own class's proxies the classification is trivially right (the released code would give 0 there)."""
        wanted = max(math.ceil(self.neighbourhood * len(self.proxy_class)), self.proxies_per_class + 1)
        return min(len(self.proxy_class), wanted)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        proxies = F.normalize(self.proxies, dim=1)
        one_hot = F.one_hot(self.proxy_class, self.num_classes).to(embeddings.dtype)  # (C*N, C)
        similarity = embeddings @ proxies.T  # (M, C*N)
        own = labels.view(-1, 1) == self.proxy_class.view(1, -1)
        # the own class's proxies first (a shift larger than any similarity), then the most similar others
        kept = torch.topk(similarity.detach() + 3.0 * own, self.neighbours(), dim=1).indices
        mask = torch.zeros_like(similarity).scatter(1, kept, 1.0)
        scores = (mask * similarity) @ one_hot  # (M, C): reverse label propagation
        present = scores != 0
        log_prob = scores - torch.logsumexp(scores.masked_fill(~present, float("-inf")), dim=1, keepdim=True)
        classify = -log_prob.gather(1, labels.view(-1, 1)).mean()
        if self.regularisation == 0:
            return classify
        regulariser = F.cross_entropy((proxies @ proxies.T) @ one_hot, self.proxy_class)
        return classify + self.regularisation * regulariser
