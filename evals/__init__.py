"""Held-out evaluation of the served policy (DESIGN.md, ``evals/``).

- `evals.quality`: answer quality of the registered policies on the served backend, answered at
  once and step by step, and the gate's entropy signal on the same items (AUROC, calibration).
"""
