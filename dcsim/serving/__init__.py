"""LLM inference serving (issue 11): request arrivals, the batching queue, configurations, admission and profit."""
import dcsim.config  # noqa: F401  (first: dcsim.serving.config builds on it; see that module's docstring)
from dcsim.serving.configurations import ServingConfig, load_serving_configs

__all__ = ["ServingConfig", "load_serving_configs"]
