"""Global pooling of CNN feature maps into image descriptors: SPoC, MAC, GeM and R-MAC.

Each pooling is a pure function working on a batch of equally sized maps, shape
``(..., C, h, w)`` -> ``(..., C)``, plus a stateless scikit-learn transformer around it that
accepts ragged collections of maps (a list of ``(C, h_i, w_i)`` arrays), an ``(n, C, h, w)``
array, or an ``(n, C)`` array read as ``n`` maps of size 1x1. The poolings are those of
Babenko and Lempitsky [1]_ (SPoC), Tolias et al. [2]_ (MAC, R-MAC) and Radenovic et al. [3]_
(GeM).

References
----------
.. [1] A. Babenko and V. Lempitsky, "Aggregating deep convolutional features for image
   retrieval", ICCV 2015 (SPoC).
.. [2] G. Tolias, R. Sicre and H. Jegou, "Particular object retrieval with integral
   max-pooling of CNN activations", ICLR 2016 (MAC, R-MAC).
.. [3] F. Radenovic, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no human
   annotation", TPAMI 2018 (GeM).
"""

from skretrieval.pooling._functions import (
    center_prior_weights,
    gem,
    mac,
    rmac,
    rmac_region_vectors,
    rmac_regions,
    spoc,
)
from skretrieval.pooling._transformers import RMAC, GeMPooling, MaxPooling, SumPooling

__all__ = [
    "GeMPooling",
    "MaxPooling",
    "RMAC",
    "SumPooling",
    "center_prior_weights",
    "gem",
    "mac",
    "rmac",
    "rmac_region_vectors",
    "rmac_regions",
    "spoc",
]
