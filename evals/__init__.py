"""Held-out evaluation of the served policy (DESIGN.md, ``evals/``); `agent/` holds only the graph.

- `evals.modes`: ``python -m evals.modes``, forced-mode evaluation of checkpoints (never / always /
  learned / gated / entropy / oracle), calibration, the agent check, the table and the Pareto plot.
- `evals.forced`: batched greedy generation forced to think / not to think (`run_forced`).
- `evals.stats`: the modes' decisions, Wilson intervals, McNemar, AUROC, τ calibration.
- `evals.scaling`: test-time scaling (vote@K, adaptive voting, best-of-K, τ_vote sweep).
- `evals.quality`: answer quality of the registered policies on the served backend, answered at
  once and step by step, and the gate's entropy signal on the same items (AUROC, calibration).
"""
