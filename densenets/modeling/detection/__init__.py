"""Detection models: Faster R-CNN (FPN), DETR, DAB-DETR and their parts."""

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .criterion import SetCriterion
from .dab_detr import DABDETR, DABTransformer
from .detr import DETR
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
    "DETR",
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
