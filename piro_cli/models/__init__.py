"""Models: the backbone registry and the Pose-invariant Attention Network (METHOD.md section 2)."""

from .attention import ViewSetAttention
from .backbones import Backbone, available_backbones, build_backbone
from .pan import PAN, PANConfig, PANOutput

__all__ = ["PAN", "Backbone", "PANConfig", "PANOutput", "ViewSetAttention", "available_backbones", "build_backbone"]
