"""LLM inference serving: configuration tables (first slice of issue 11; the queue model is not built yet)."""
from dcsim.serving.configurations import ServingConfig, load_serving_configs

__all__ = ["ServingConfig", "load_serving_configs"]
