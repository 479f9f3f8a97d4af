"""The OpenAI-compatible HTTP service: protocol (pydantic models), serving logic, thin routes,
settings and the `thinkgate` CLI. Imports `agent`, `policy` and `retrieval`."""
