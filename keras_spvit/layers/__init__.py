"""Building blocks of the spatial-structure vision transformers."""

from keras_spvit.layers.base_attention import BaseAttention
from keras_spvit.layers.class_token import ClassToken
from keras_spvit.layers.conv_stem import ConvStem
from keras_spvit.layers.drop_path import DropPath
from keras_spvit.layers.mlp import MLP
from keras_spvit.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_spvit.layers.pos_cnn import PosCNN
from keras_spvit.layers.position_embedding import PositionEmbedding
from keras_spvit.layers.spatial_prior_attention import SpatialPriorAttention
from keras_spvit.layers.token_labeling_head import TokenLabelingHead
from keras_spvit.layers.transformer_block import TransformerBlock
from keras_spvit.layers.attention_refiner import AttentionRefiner
from keras_spvit.layers.shared_attention import SharedAttention
from keras_spvit.layers.token_pooling import TokenPooling

__all__ = [
    "AttentionRefiner",
    "BaseAttention",
    "ClassToken",
    "ConvStem",
    "DropPath",
    "MLP",
    "MultiHeadSelfAttention",
    "PosCNN",
    "PositionEmbedding",
    "SharedAttention",
    "SpatialPriorAttention",
    "TokenLabelingHead",
    "TokenPooling",
    "TransformerBlock",
]
