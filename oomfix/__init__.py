"""oomfix: say what really killed a distributed training run, and fix its configs surgically."""

__version__ = "0.1.0"
