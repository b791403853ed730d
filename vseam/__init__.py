"""vseam: V-SEAM head profiles for vision-language models, calibrated offline and served by vLLM."""

__version__ = "0.1.0"
