"""steerable: steerable alignment of language models, composed from Hydra configs."""

__version__ = "0.1.0"
