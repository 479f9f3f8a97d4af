"""Agent settings: thresholds (nats), budgets (tokens, steps) and retrieval sizes.

Contract: `AgentConfig` is a dataclass validated on construction (`ValueError` naming the
rule and the value). `AgentConfig.for_model(dir)` reads ``thinkgate.json`` next to a model
(written by calibration, see DESIGN.md) over the defaults; unknown keys are an error.
Defaults were measured for SmolLM2-135M-Instruct on this project's prompts.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CALIBRATION_FILE = "thinkgate.json"
DECISIONS = ("entropy", "learned", "both")
log = logging.getLogger("thinkgate.agent")


@dataclass
class AgentConfig:
    """Knobs of the graph; every entropy is a mean over tokens, in nats."""

    tau_think: float = field(default=1.5, metadata={"help": "gate: draft score above this → think"})
    tau_exit: float = field(default=1.0, metadata={"help": "probe: answer-draft score at or below this → stop thinking"})
    tau_retrieve: float = field(default=1.6, metadata={"help": "a step whose mean entropy exceeds this triggers retrieval with the step as query (FLARE/DRAGIN)"})
    decision: str = field(default="entropy", metadata={"help": "how the gate decides under reasoning_effort=auto: 'entropy' (the draft's score against tau_think; a draft that opens <think> also thinks), 'learned' (the model's own first token: the think token → think, else answer at once; a checkpoint trained by python -m training.decision), or 'both' (think when either says so)"})
    score: str = field(default="mean", metadata={"help": "draft aggregate compared with τ: mean or max"})
    answer_prefix: str = field(default="", metadata={"help": "text forced at the start of every direct answer (the gate's draft, each probe, the answer after </think>), e.g. 'Answer:'. An instruct model's free draft of a hard question is the confident opening of a solution, so its entropy ranks the wrong way (Qwen2.5-Coder-0.5B: AUROC 0.32); a forced direct answer's entropy ranks hard above easy"})
    draft_tokens: int = field(default=16, metadata={"help": "tokens the gate drafts before deciding"})
    probe_tokens: int = field(default=8, metadata={"help": "answer tokens drafted after each step to test certainty"})
    step_tokens: int = field(default=128, metadata={"help": "most tokens in one reasoning step"})
    max_steps: int = field(default=4, metadata={"help": "most reasoning steps per answer"})
    max_think_tokens: int = field(default=256, metadata={"help": "most reasoning tokens per answer"})
    max_answer_tokens: int = field(default=256, metadata={"help": "answer length limit when the client sets none"})
    think_share: float = field(default=0.75, metadata={"help": "largest share of a client's max_completion_tokens spent on hidden work (discarded draft, probes, reasoning); the answer keeps the rest"})
    max_samples: int = field(default=8, metadata={"help": "self-consistency: most reasoning+answer samples voted on (the greedy one included) when reasoning_effort=high or the request sets max_samples, and thinking ended uncertain"})
    tau_vote: float = field(default=0.0, metadata={"help": "vote only when the reasoning's mean token entropy (nats) exceeds this; calibrate with python -m evals.modes --samples 8 on the dev split and python -m evals.scaling"})
    vote_confidence: float = field(default=0.95, metadata={"help": "Adaptive-Consistency Beta rule: stop sampling once P(leading answer beats the runner-up) reaches this"})
    vote_temperature: float = field(default=0.4, metadata={"help": "sampling temperature of the voting samples (dev, hard chain sums: samples right 54 % at 0.4 vs 43 % at 0.7; vote@8 0.587 vs 0.567)"})
    sample_tokens: int = field(default=160, metadata={"help": "most tokens of one voting sample (reasoning + answer)"})
    min_passage_score: float = field(default=0.53, metadata={"help": "passages whose cosine score is below this are not shown. Measured with MiniLM on 23 docs files (the docs-QA sources plus the numeric ones): best passage of 300 held-out sums 0.40 median, 0.52 max; of the 20 docs questions 0.54 min, 0.68 median"})
    top_k: int = field(default=3, metadata={"help": "passages retrieved for the question"})
    step_k: int = field(default=2, metadata={"help": "passages retrieved per in-reasoning search"})
    max_retrievals: int = field(default=3, metadata={"help": "most in-reasoning retrievals per answer"})
    history_turns: int = field(default=3, metadata={"help": "earlier turns kept in the prompt"})
    query_turns: int = field(default=1, metadata={"help": "earlier user turns added to the retrieval query"})

    def __post_init__(self) -> None:
        for name in ("tau_think", "tau_exit", "tau_retrieve", "tau_vote"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 nats, got {getattr(self, name)}")
        if not 0.0 <= self.think_share < 1.0:
            raise ValueError(f"think_share must be in [0, 1) so the answer keeps room, got {self.think_share}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if self.score not in ("mean", "max"):
            raise ValueError(f"score must be 'mean' or 'max', got {self.score!r}")
        if not 0.5 <= self.vote_confidence < 1.0:
            raise ValueError(f"vote_confidence must be in [0.5, 1), got {self.vote_confidence}")
        if self.vote_temperature <= 0:
            raise ValueError(f"vote_temperature must be > 0, got {self.vote_temperature}")
        for name in ("draft_tokens", "probe_tokens", "step_tokens", "max_steps", "max_think_tokens",
                     "max_answer_tokens", "top_k", "step_k", "max_samples", "sample_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_retrievals", "history_turns", "query_turns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AgentConfig":
        """Build from a dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known - {"_comment", "model", "calibrated"})
        if extra:
            raise ValueError(f"unknown agent settings: {extra} (known: {sorted(known)})")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def for_model(cls, model_dir: str | Path | None, **overrides) -> "AgentConfig":
        """Defaults, then ``<model_dir>/thinkgate.json`` if present, then `overrides` (None values ignored)."""
        data: dict = {}
        if model_dir is not None:
            path = Path(model_dir) / CALIBRATION_FILE
            if path.is_file():
                data.update(json.loads(path.read_text()))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)


def calibration_mismatch(model_dir: str | Path | None, backend: str, weights: str) -> str | None:
    """A warning when ``<model_dir>/thinkgate.json`` was calibrated on another backend or weight
    format than the one serving (quantization shifts entropies, so τ may not transfer); None when
    they agree or nothing was calibrated. The warning is also logged."""
    if model_dir is None:
        return None
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    cal = json.loads(path.read_text()).get("calibrated") or {}
    on = (cal.get("backend"), cal.get("weights"))
    if not cal or on == (backend, weights):
        return None
    msg = (f"thresholds in {path} were calibrated on backend={on[0]} weights={on[1]} but the policy is served "
           f"on backend={backend} weights={weights}: entropies differ; re-calibrate on these weights "
           "(`python -m evals.quality report --write-calibration`, or `python -m evals.modes --calibrate`)")
    log.warning(msg)
    return msg
