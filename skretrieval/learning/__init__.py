"""Supervised learning of retrieval descriptors (torch).

- :class:`EmbeddingLearner` -- learn an embedding of global descriptors with a metric-learning
  loss (von Mises-Fisher, PDDM, triplet, contrastive).
- :class:`RetrievalFineTuner` -- fine-tune a CNN end to end for retrieval.

The losses are pure torch functions in :mod:`skretrieval.learning._losses`. The fine-tuner's
network (trunk, pooling and whitening head) is in ``_network``, its training tuples (label
checks, hard-negative mining) in ``_tuples``.
"""

from skretrieval.learning._embedding import EmbeddingLearner
from skretrieval.learning._finetuning import RetrievalFineTuner

__all__ = ["EmbeddingLearner", "RetrievalFineTuner"]
