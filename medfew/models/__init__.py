"""Image encoders behind a registry: every backbone maps ``(B, C, H, W) -> (B, feature_dim)``.

Importing this package registers the built-in backbones: ``conv4``, ``resnet12``,
``monai_densenet121``, ``monai_resnet10``, ``monai_resnet18`` and the ImageNet-pretrained
``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``.
"""

from medfew.models import conv4, efficientnet_lite, monai_nets, resnet12  # noqa: F401  (registration)
from medfew.models.base import Backbone
from medfew.models.norm import NORMS
from medfew.models.pretrained import load_weights_file
from medfew.models.registry import build_backbone, list_backbones, register_backbone

__all__ = ["NORMS", "Backbone", "build_backbone", "list_backbones", "load_weights_file", "register_backbone"]
