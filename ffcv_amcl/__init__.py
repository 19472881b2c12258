"""ffcv-amcl: fast self-supervised training with Adaptive Multi-head Contrastive Learning."""

__version__ = "0.1.0"
