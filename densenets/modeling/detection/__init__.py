"""Detection models: Faster R-CNN (FPN); the DETR family on one base (`DETRBase`): DETR, DAB-DETR,
Deformable DETR, DINO; and their parts."""

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .criterion import SetCriterion
from .dab_detr import DABDETR
from .dab_transformer import DABTransformer
from .deformable_detr import DeformableDETR, MultiScaleDETR
from .deformable_transformer import DeformableTransformer, DINOTransformer
from .denoising import ContrastiveDenoising
from .detr import DETR, SingleScaleDETR
from .detr_base import DETRBase
from .dino import DINO
from .faster_rcnn import FasterRCNN
from .hungarian_matcher import HungarianMatcher
from .matcher import Matcher
from .poolers import ROIPooler
from .roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardRoIHeads
from .rpn import RPN, RPNHead
from .sampler import BalancedPositiveNegativeSampler
from .transformer import DETRTransformer

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "DABDETR",
    "DABTransformer",
    "DeformableDETR",
    "DeformableTransformer",
    "ContrastiveDenoising",
    "DETR",
    "DETRBase",
    "DINO",
    "DINOTransformer",
    "DETRTransformer",
    "FasterRCNN",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "HungarianMatcher",
    "Matcher",
    "MultiScaleDETR",
    "ROIPooler",
    "RPN",
    "RPNHead",
    "SetCriterion",
    "SingleScaleDETR",
    "StandardRoIHeads",
]
