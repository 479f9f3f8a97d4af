"""Training (GRPO with next-token-reasoning rewards): see issue 3. Imports `policy` and `retrieval` only."""
