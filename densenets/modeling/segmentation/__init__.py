"""Semantic segmentation: the encoder-decoder meta-architecture and its heads
(FCN, DeepLabV3, DeepLabV3+)."""

from .aspp import ASPP, DeepLabV3Head, DeepLabV3PlusHead
from .decode_head import DecodeHead, SeparableConvNormAct, conv_bn_relu
from .encoder_decoder import EncoderDecoder, SegInference
from .fcn_head import FCNHead
from .losses import SemSegLoss

__all__ = [
    "ASPP",
    "DecodeHead",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "EncoderDecoder",
    "FCNHead",
    "SegInference",
    "SemSegLoss",
    "SeparableConvNormAct",
    "conv_bn_relu",
]
