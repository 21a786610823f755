"""The runtime wing: where and how the networks run (device, precision, batch size, memory).

``devices`` picks the device and precision, sizes batches from free memory and recovers from
out-of-memory errors. Both methods and the pipeline call it; it knows neither method.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "resolve_device": "devices",
    "autocast_dtype": "devices",
    "auto_batch_size": "devices",
    "inference_context": "devices",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
