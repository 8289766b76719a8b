"""pc_gpu: GPU-accelerated reduction pipeline for the Mayall pointing camera."""

__version__ = "0.1.0"
