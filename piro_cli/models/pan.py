"""The Pose-invariant Attention Network (PAN), METHOD.md section 2.

    views (B, V, 3, H, W) -> backbone (one pass over B*V images) -> feats (B, V, F)
    feats -> F_obj: Linear(F, Do) -> o_k -> L2 norm                       -> sv_obj (B, V, Do)
             o_k -> A_obj (self-attention) -> mean over views -> L2 norm  -> mv_obj (B, Do)
    feats -> F_cat: Linear(F, Dc) -> c_k ... likewise                     -> sv_cat, mv_cat

Where the normalisation sits (as in METHOD.md's diagram and the authors' released code):
- single-view embeddings are taken BEFORE attention: sv = L2norm(F(feats)); a single view's embedding therefore
  never depends on which other views are in the set;
- the attention layer gets the UNnormalised projections F(feats), and the multi-view embedding is
  L2norm(mean over views of A(F(feats))).

Single-space mode (PiRO-SE, `dual=False`): one head F_obj: Linear(F, obj_dim) and one attention layer A_obj; the
same tensors serve both tasks (sv_cat is sv_obj, mv_cat is mv_obj, attn_cat is attn_obj); cat_dim is unused.

Aggregation `mean` (the PIEs baselines, METHOD.md section 8): no attention layers; the multi-view embedding is
L2norm(mean over views of F(feats)), i.e. average pooling of the view features followed by the (linear) head,
and the reported attention weights are the uniform 1/V that pooling amounts to.

Head `vgg16_fc7` (the PIEs baselines on the `vgg16` backbone, as released): F_obj is VGG-16's own classifier up
to fc7 and its ReLU (ImageNet weights, dropout between fc6 and fc7), so the single-view embedding is the
L2-normalised 4096-d fc7 feature and the view set's is L2norm(mean of the views' fc7 features); no linear layer.
With the default head `linear`, F_obj (and F_cat) are one Linear layer each. Head `identity` (the untrained
`backbone` baseline): no layer at all, the single-view embedding is the L2-normalised backbone feature and the view
set's the L2-normalised mean of its views' features.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piro_cli.errors import PiroError
from piro_cli.models.attention import ViewSetAttention
from piro_cli.models.backbones import VGG16_FC7_DIM, BackboneCut, build_backbone, cut_backbone, vgg16_fc7_head

AGGREGATIONS = ("attention", "mean")
HEADS = ("linear", "vgg16_fc7", "identity")


@dataclass
class PANConfig:
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    dual: bool = True  # False: PiRO-SE, the single-space variant (one head, one attention layer)
    cat_dim: int = 2048
    obj_dim: int = 2048  # in single-space mode only obj_dim is used (cat_dim is ignored)
    dropout: float = 0.25
    aggregation: str = "attention"  # or "mean": average pooling of the views (PIEs baselines)
    head: str = "linear"  # F_obj / F_cat; "vgg16_fc7": VGG-16's classifier up to fc7 (PIEs baselines on vgg16);
    # "identity": the backbone's pooled features themselves (the untrained `backbone` baseline; obj_dim = their size)
    object_trunk: str | None = None  # two paths (`piro train --object-features frozen`): the object head reads a frozen
    # copy of the backbone's layers from this stage up (ImageNet's, never trained), the category head the trained
    # backbone; None: both heads read the one backbone (released)

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise PiroError(f"aggregation {self.aggregation!r}: choose one of {', '.join(AGGREGATIONS)}")
        if self.head not in HEADS:
            raise PiroError(f"head {self.head!r}: choose one of {', '.join(HEADS)}")
        if self.object_trunk is not None and (not self.dual or self.head != "linear" or self.aggregation != "attention"):
            raise PiroError("object_trunk (two backbone paths) needs two spaces with linear heads and attention: piro-dual")
        if self.head == "vgg16_fc7" and (self.backbone != "vgg16" or self.dual or self.obj_dim != VGG16_FC7_DIM):
            raise PiroError(
                f"head vgg16_fc7 needs backbone vgg16, one space and obj_dim {VGG16_FC7_DIM}; got backbone {self.backbone}, "
                f"dual={self.dual}, obj_dim {self.obj_dim}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PANConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PiroError(
                f"model config has unknown fields {unknown} (known: {sorted(known)}); the checkpoint was probably written "
                "by a different piro version: use that version, or retrain."
            )
        return cls(**{k: d[k] for k in known if k in d})


@dataclass
class PANOutput:
    sv_cat: Tensor  # (B, V, Dc) L2-normalised single-view category embeddings
    sv_obj: Tensor  # (B, V, Do)
    mv_cat: Tensor  # (B, Dc) L2-normalised multi-view (attention -> mean over views -> L2 norm)
    mv_obj: Tensor  # (B, Do)
    attn_cat: Tensor  # (B, V, V) attention weights
    attn_obj: Tensor
    pooled_obj: Tensor  # (B, Do) the object view-set vector before its L2 norm (mean of F(feats), or of A(F(feats)))
    # single-space: sv_cat IS sv_obj (same tensor object), mv_cat IS mv_obj, attn_cat IS attn_obj


class PAN(nn.Module):
    def __init__(self, config: PANConfig) -> None:
        super().__init__()
        self.config = config
        backbone = build_backbone(config.backbone, pretrained=config.pretrained)
        self.backbone = backbone.module
        self.feat_dim = backbone.feat_dim
        self._cuts: dict[str, BackboneCut] = {}  # views over the backbone's layers, not submodules (no extra state)
        # two paths: a frozen copy of the layers above the cut feeds the object head; features are then
        # [trained backbone's, frozen copy's] side by side (2F), each head reading its half
        self.object_trunk: nn.Module | None = None
        if config.object_trunk is not None:
            self.object_trunk = copy.deepcopy(self.cut(config.object_trunk).above).requires_grad_(False).eval()
            self.feat_dim = 2 * backbone.feat_dim
        head_in = backbone.feat_dim
        attend = config.aggregation == "attention"
        if config.head == "identity":
            if config.dual or config.aggregation != "mean":
                raise PiroError("head identity: one space and mean aggregation only (the untrained backbone baseline)")
            config.obj_dim = self.feat_dim  # the embedding is the feature vector
            self.obj_head = nn.Identity()
        elif config.head == "vgg16_fc7":
            self.obj_head = vgg16_fc7_head(config.pretrained)
        else:
            self.obj_head = nn.Linear(head_in, config.obj_dim)
        self.obj_attention = ViewSetAttention(config.obj_dim, dropout=config.dropout) if attend else None  # A_obj
        if config.dual:
            self.cat_head = nn.Linear(head_in, config.cat_dim)  # F_cat
            self.cat_attention = ViewSetAttention(config.cat_dim, dropout=config.dropout) if attend else None  # A_cat
        else:
            self.cat_head = None
            self.cat_attention = None
        # Test-time augmentation (`--tta`): an inference setting, not part of the model or its checkpoint
        self.flip_views = False
        # Arithmetic of the backbone under inference (`--precision`, piro_cli.hardware.PRECISIONS): a setting too
        self.precision = "auto"
        # Evaluation crop (the PIEs baselines' released test transform, Resize(256) + CenterCrop(224)): the central
        # fraction of each view, resized back to the view's size, in eval mode only; None: the whole view
        self.center_crop: float | None = None
        # Test-time scales (`--tta-scales`, eval mode only): each view's features are the mean over the view resized by
        # these factors (1.0: as stored); a setting, like the flips
        self.test_scales: tuple[float, ...] = (1.0,)

    @property
    def dual(self) -> bool:
        return self.config.dual

    @property
    def fixed_input_size(self) -> bool:
        """Whether the backbone takes one input size only (timm's vision transformers): no test-time scales."""
        return bool((getattr(self.backbone, "pretrained_cfg", None) or {}).get("fixed_input_size"))

    def features(self, views: Tensor) -> Tensor:
        """(B, V, 3, H, W) -> (B, V, F): ONE backbone pass over the B*V images.

        With `flip_views` (test-time augmentation, eval mode only) each view's features are the mean of the view's and
        its horizontal mirror's; with `test_scales`, the mean over the view resized by each factor (bilinear; the
        backbones pool globally, so any size gives F features). The heads are linear, so this is the mean of the
        views' embeddings before normalisation (for the vgg16_fc7 head, of the conv features it reads)."""
        if views.dim() != 5:
            raise ValueError(f"PAN.features expects views (B, V, 3, H, W), got {tuple(views.shape)}")
        b, v = views.shape[:2]
        images = views.flatten(0, 1)
        if self.center_crop is not None and not self.training:
            images = crop_center(images, self.center_crop)
        if self.training:
            return self._backbone_features(images).reshape(b, v, -1)
        feats = sum(self._flipped_features(resize_views(images, scale)) for scale in self.test_scales)
        return (feats / len(self.test_scales)).reshape(b, v, -1)

    def _flipped_features(self, images: Tensor) -> Tensor:
        if self.flip_views:
            return (self._backbone_features(images) + self._backbone_features(images.flip(-1))) / 2
        return self._backbone_features(images)

    def _backbone_features(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, F): the backbone's features; with two paths, the trained and the frozen side by side."""
        if self.object_trunk is None:
            return self.backbone(images)
        return self._two_paths(self.cut(self.config.object_trunk).below(images))

    def _two_paths(self, acts: Tensor) -> Tensor:
        """Activations at the object trunk's stage (N, C, h, w) -> [trained layers' features, frozen copy's] (N, 2F)."""
        with torch.no_grad():
            frozen = self.object_trunk(acts)
        return torch.cat([self.cut(self.config.object_trunk).above(acts), frozen], dim=-1)

    def train(self, mode: bool = True) -> PAN:
        super().train(mode)
        if self.object_trunk is not None:  # its batch norms keep ImageNet's statistics
            self.object_trunk.eval()
        return self

    def cut(self, stage: str) -> BackboneCut:
        """The backbone split so that training starts at `stage` (`--train-from`; models.backbones.cut_points)."""
        if stage not in self._cuts:
            self._cuts[stage] = cut_backbone(self.config.backbone, self.backbone, stage)
        return self._cuts[stage]

    def activations(self, views: Tensor, stage: str) -> Tensor:
        """(B, V, 3, H, W) -> (B, V, C, h, w): the backbone's activations where `stage` starts (what training caches)."""
        b, v = views.shape[:2]
        acts = self.cut(stage).below(views.flatten(0, 1))
        return acts.reshape(b, v, *acts.shape[1:])

    def features_from(self, acts: Tensor, stage: str) -> Tensor:
        """(B, V, C, h, w) activations at `stage` -> (B, V, F) backbone features: the rest of the backbone."""
        b, v = acts.shape[:2]
        if self.object_trunk is None:
            return self.cut(stage).above(acts.flatten(0, 1)).reshape(b, v, -1)
        if stage != self.config.object_trunk:
            raise ValueError(f"features_from: the object trunk starts at {self.config.object_trunk}, not {stage}")
        return self._two_paths(acts.flatten(0, 1)).reshape(b, v, -1)

    def forward_features(self, feats: Tensor) -> PANOutput:
        """(B, V, F) backbone features -> all embeddings; what `forward` gives, from cached features."""
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"PAN.forward_features expects features (B, V, {self.feat_dim}), got {tuple(feats.shape)}")
        cat_feats, obj_feats = feats.chunk(2, dim=-1) if self.object_trunk is not None else (feats, feats)
        sv_obj, mv_obj, attn_obj, pooled_obj = self._branch(obj_feats, self.obj_head, self.obj_attention)
        if self.cat_head is None:
            sv_cat, mv_cat, attn_cat = sv_obj, mv_obj, attn_obj
        else:
            sv_cat, mv_cat, attn_cat, _ = self._branch(cat_feats, self.cat_head, self.cat_attention)
        return PANOutput(
            sv_cat=sv_cat, sv_obj=sv_obj, mv_cat=mv_cat, mv_obj=mv_obj, attn_cat=attn_cat, attn_obj=attn_obj, pooled_obj=pooled_obj
        )  # fmt: skip

    def forward(self, views: Tensor) -> PANOutput:
        return self.forward_features(self.features(views))

    @staticmethod
    def _branch(feats: Tensor, head: nn.Module, attention: ViewSetAttention | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(sv, mv, attention weights, the pooled vector that mv normalises)."""
        emb = head(feats)  # (B, V, D): o_k / c_k before normalisation
        sv = F.normalize(emb, p=2, dim=-1)  # single-view embeddings: before attention (METHOD.md diagram)
        if attention is None:  # average pooling
            b, v = emb.shape[:2]
            pooled = emb.mean(dim=1)
            return sv, F.normalize(pooled, p=2, dim=-1), emb.new_full((b, v, v), 1.0 / v), pooled
        context, attn = attention(emb)  # attention on the unnormalised embeddings, as in the released code
        pooled = context.mean(dim=1)
        return sv, F.normalize(pooled, p=2, dim=-1), attn, pooled

    def head_parameters(self) -> list:
        """Everything but the backbone (and the frozen object trunk): F_obj, A_obj (and F_cat, A_cat when dual)."""
        return [p for name, p in self.named_parameters() if not name.startswith(("backbone.", "object_trunk."))]

    def backbone_parameters(self) -> list:
        return list(self.backbone.parameters())


def resize_views(images: Tensor, scale: float) -> Tensor:
    """(N, 3, H, W) -> (N, 3, round(H*scale), round(W*scale)), bilinear; the images themselves at scale 1."""
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    return F.interpolate(images, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", align_corners=False)


def crop_center(images: Tensor, fraction: float) -> Tensor:
    """(N, 3, H, W) -> the central `fraction` of each image's height and width, resized back to (H, W) bilinearly."""
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))  # where torchvision's CenterCrop puts it
    crop = images[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
