"""The agent: a LangGraph state machine that reads the policy's entropy to decide whether to
think, interleaves retrieval with reasoning steps, and stops thinking once the answer is
certain. Imports `policy` and `retrieval`, never `api` or `training`."""
