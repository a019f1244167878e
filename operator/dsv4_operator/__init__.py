"""The DeepSeek-V4 operator: CRD types, memory planner, manifest rendering and kopf handlers."""

__all__ = ["__version__"]

__version__ = "0.1.0"
