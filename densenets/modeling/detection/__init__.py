"""Detection models: Faster R-CNN (FPN), DETR, DAB-DETR, Deformable DETR, DINO and their parts."""

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .criterion import SetCriterion
from .dab_detr import DABDETR, DABTransformer
from .deformable_detr import DeformableDETR, DeformableTransformer
from .denoising import ContrastiveDenoising
from .detr import DETR
from .dino import DINO, DINOTransformer
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
    "DINO",
    "DINOTransformer",
    "DETRTransformer",
    "FasterRCNN",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "HungarianMatcher",
    "Matcher",
    "ROIPooler",
    "RPN",
    "RPNHead",
    "SetCriterion",
    "StandardRoIHeads",
]
