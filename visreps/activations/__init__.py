"""Activations: the single place features come from (labels sources and evaluations read through it).

- ``ActivationReader``: every requested extraction point of a network in one forward pass;
- ``StimulusSet``: which images make up each stimulus, streamed in transformed batches;
- ``extract_features``: stream a stimulus set through a network into an on-disk cache of per-point
  memory-mapped arrays, projected on the fly (or exact), re-used by key and resumed after an interruption.
"""

from visreps.activations.cache import CachedFeatures, FeatureRows, FeatureSpec, extract_features
from visreps.activations.reader import ActivationReader, TokenRule, reduce_tokens
from visreps.activations.stimuli import StimulusError, StimulusSet

__all__ = [
    "ActivationReader",
    "CachedFeatures",
    "FeatureRows",
    "FeatureSpec",
    "StimulusError",
    "StimulusSet",
    "TokenRule",
    "extract_features",
    "reduce_tokens",
]
