"""The LLM policy: one abstract async `Policy`, its backends, entropy maths, the model registry
and the text format shared by the agent and by training.

Imports nothing from `retrieval`, `agent`, `api` or `training`.
"""
from policy.base import Generation, GenerationDelta, GenerationParams, Policy

__all__ = ["Generation", "GenerationDelta", "GenerationParams", "Policy"]
