"""The evaluation post-processing of the Bernoulli diffusion paper (method document §4.4, the
``compute_ours=False`` branch that the evaluation script runs by default), per 2D slice:

1. per-channel squared difference between restoration and input;
2. 5x5 median filter on each channel (scipy, ``reflect`` borders), then the sum over channels;
3. clip to the slice's own 1st and 99th percentiles, min-max to [0, 1]: the probability map;
4. prediction = probability > 0.5, then connected components (8-connectivity) whose filled area is
   at most 15 pixels are removed.

This is the paper's per-slice protocol, kept for comparisons with its numbers; the project's own
volume post-processing (``napari_disyre.detection.postprocess``) is separate.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure

MEDIAN_SIZE = 5
CLIP_PERCENTILES = (1.0, 99.0)
THRESHOLD = 0.5
MAX_REMOVED_AREA = 15


def slice_probability(restoration: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Steps 1-3 for one slice: (C, H, W) restoration and input -> (H, W) map in [0, 1]."""
    diff = (np.asarray(restoration, np.float64) - np.asarray(image, np.float64)) ** 2
    if diff.ndim == 2:
        diff = diff[None]
    smoothed = np.stack([ndimage.median_filter(d, size=MEDIAN_SIZE) for d in diff]).sum(axis=0)
    low, high = np.percentile(smoothed, CLIP_PERCENTILES)
    clipped = np.clip(smoothed, low, high)
    span = clipped.max() - clipped.min()
    return (clipped - clipped.min()) / span if span > 0 else np.zeros_like(clipped)


def remove_small_components(mask: np.ndarray, max_area: int = MAX_REMOVED_AREA) -> np.ndarray:
    """Drop 8-connected components whose filled area (holes included) is ``max_area`` px or less."""
    labels = measure.label(mask, connectivity=2)
    keep = np.zeros_like(mask, dtype=bool)
    for region in measure.regionprops(labels):
        if region.area_filled > max_area:
            keep[labels == region.label] = True
    return keep


def slice_prediction(probability: np.ndarray) -> np.ndarray:
    """Step 4: threshold the probability map at 0.5 and remove the small components."""
    return remove_small_components(probability > THRESHOLD)
