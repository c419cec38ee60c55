"""Metric and classification losses behind one contract, and their weighted composition.

Importing this package registers every entry of :data:`LOSSES`: "triplet", "contrastive",
"multi_similarity", "ntxent", "supcon" (pytorch-metric-learning pair losses, with miners from
:data:`MINERS`), "arcface", "proxy_anchor", "cross_entropy", "bce" (per-class weights), "clip"
(paired embeddings), "simsiam" (two views, its projector and predictor), "consistency_mse",
"consistency_kl", "consistency_cosine" (weak/strong view pairs) and "hybrid" (a weighted sum of
the others)::

    loss = create_loss({"name": "hybrid", "parts": [{"name": "cross_entropy"},
                                                    {"name": "contrastive", "weight": 0.5}]},
                       embedding_dim=512, num_classes=100)
    loss.validate(has_labels=True, has_text=False, has_views=False)
    parts = loss(embeddings, labels)      # {"loss": ..., "cross_entropy": ..., "contrastive": ...}
"""

from lookalike.losses.base import (
    DISTANCES,
    LOSSES,
    RetrievalLoss,
    ViewPairs,
    create_loss,
    make_distance,
)
from lookalike.losses.classification import (
    ArcFaceLoss,
    BCELoss,
    ClassifierHead,
    CrossEntropyLoss,
    ProxyAnchorLoss,
)
from lookalike.losses.clip import CLIPLoss
from lookalike.losses.consistency import (
    ConsistencyLoss,
    CosineConsistencyLoss,
    KLConsistencyLoss,
    MSEConsistencyLoss,
)
from lookalike.losses.hybrid import HybridLoss
from lookalike.losses.metric import (
    ContrastiveLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    PairMetricLoss,
    SupConLoss,
    TripletLoss,
)
from lookalike.losses.miners import MINERS, create_miner
from lookalike.losses.simsiam import SimSiamLoss

__all__ = [
    "DISTANCES",
    "LOSSES",
    "MINERS",
    "ArcFaceLoss",
    "BCELoss",
    "CLIPLoss",
    "ClassifierHead",
    "ConsistencyLoss",
    "ContrastiveLoss",
    "CosineConsistencyLoss",
    "CrossEntropyLoss",
    "HybridLoss",
    "KLConsistencyLoss",
    "MSEConsistencyLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "PairMetricLoss",
    "ProxyAnchorLoss",
    "RetrievalLoss",
    "SimSiamLoss",
    "SupConLoss",
    "TripletLoss",
    "ViewPairs",
    "create_loss",
    "create_miner",
    "make_distance",
]
