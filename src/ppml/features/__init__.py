"""Fixed, data-independent feature maps for private learning (no privacy cost to compute)."""

from .scattering import ScatteringFeatures, n_scattering_channels

__all__ = ["ScatteringFeatures", "n_scattering_channels"]
