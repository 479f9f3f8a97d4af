"""Script arguments of ``python -m training.grpo`` (TRL's `GRPOConfig` and `ModelConfig` carry the rest).

Contract: a dataclass whose fields carry help text (shown by ``--help``) and are validated on
construction with messages that name the rule and the value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from training.decoupled import check_mode_token_weight

NTR_REWARDS = ["prefix_match", "think_length", "no_think_bonus", "soft_overlong", "format"]
# binary correctness plus AdaptThink's no-think bonus: format and length penalties collapsed
# other small runs, so they stay optional (add them with --reward_funcs)
ARITH_REWARDS = ["correct", "no_think_bonus"]
# Search-R1's exact-match reward plus a cost per search (issue 29)
HOPS_REWARDS = ["correct", "search_cost"]
HOPS_TYPES = ("bridge", "comparison", "single")
# issue 27: AdaptThink's correctness + no-think bonus, plus a length penalty on the thinking that remains,
# paid only by right answers (with `think_length` unconditional, 16 CPU steps collapsed thinking: all-wrong
# groups ranked answering at once first; docs/results/grpo-mix-cpu)
MIX_REWARDS = ["correct", "no_think_bonus", "correct_think_length"]
MIX_SETS = ("gsm", "multidigit", "onestep")


@dataclass
class ScriptArguments:
    """Data, rewards and output of a GRPO run."""

    task: str = field(default="ntr", metadata={
        "help": "ntr (next-token reasoning), arith (chain sums of tasks.arithmetic, easy + hard), hops (two-hop "
                "questions of tasks.hops, answered with <search> calls to the real retriever: training.search_rollout) "
                "or mix (issue 27's workload of tasks.numeric, each mode the served agent's branch: "
                "training.rollout.served_mode_rollout)"})
    mix_sets: list[str] = field(default_factory=lambda: list(MIX_SETS), metadata={
        "help": "mix: task sets to train on, num_examples each, interleaved (held-out families stay out)"})
    direct_tokens: int = field(default=32, metadata={"help": "mix: most tokens of a direct answer (after the forced prefix)"})
    answer_tokens: int = field(default=32, metadata={"help": "mix: most tokens of the answer after thinking"})
    hops_types: list[str] = field(default_factory=lambda: list(HOPS_TYPES), metadata={
        "help": f"hops: question types to train on, num_examples each (of {list(HOPS_TYPES)})"})
    search_cost: float = field(default=0.1, metadata={"help": "search_cost: reward subtracted per <search> call answered"})
    corpus: list[str] = field(default_factory=list, metadata={
        "help": "NTR: files/folders of text; default: the chunk texts of the agent's index"})
    index_dir: str | None = field(default=None, metadata={"help": "index whose texts are the default NTR corpus (default: <cache>/index)"})
    dataset_file: str | None = field(default=None, metadata={
        "help": "ntr: a JSONL written by an earlier run (ntr_dataset.jsonl)"})
    num_examples: int = field(default=256, metadata={"help": "training examples to build (arith: per bucket)"})
    eval_examples: int = field(default=32, metadata={"help": "held-out examples (scored before and after training)"})
    ntr_exclude: str | None = field(default=None, metadata={
        "help": "ntr: an NTR file (the evaluation's) whose documents are left out of the training rows"})
    window: int = field(default=256, metadata={"help": "ntr: tokens of each document scored by the proxy model"})
    context_tokens: int = field(default=96, metadata={"help": "ntr: tokens of context x_<t in a prompt"})
    continuation_tokens: int = field(default=8, metadata={"help": "ntr: tokens of true continuation kept for the reward"})
    entropy_threshold: float = field(default=2.0, metadata={"help": "ntr: a position is hard when its top-16 entropy (nats) is at least this"})
    easy_share: float = field(default=0.3, metadata={"help": "ntr: share of easy positions kept (the policy must learn not to think there)"})
    proxy_model: str | None = field(default=None, metadata={"help": "ntr: model scoring positions (default: the policy)"})
    reward_funcs: list[str] | None = field(default=None, metadata={
        "help": f"reward names (registry in training/rewards.py); default ntr {NTR_REWARDS}, arith {ARITH_REWARDS}; "
                "weights go in --reward_weights"})
    think_budget: int = field(default=128, metadata={"help": "think_length: thinking tokens that cost the full penalty"})
    no_think_delta: float = field(default=0.5, metadata={"help": "no_think_bonus: δ for a correct answer without thinking"})
    overlong_buffer: int = field(default=32, metadata={"help": "soft_overlong: L_cache, tokens before max_completion_length where the penalty ramps"})
    forced_modes: bool = field(default=True, metadata={
        "help": "each group is half forced to think, half forced to answer at once (training.rollout)"})
    ig_clip: float = field(default=2.0, metadata={
        "help": "information_gain: the reward is the thought's information gain (nats) clipped to ±ig_clip"})
    think_share: float = field(default=0.5, metadata={"help": "share of each group forced to think"})
    mask_forced: bool = field(default=False, metadata={
        "help": "drop the forced first token from the loss (then the mode decision itself is not trained)"})
    mode_token_weight: float = field(default=0.0, metadata={
        "help": "α of Thinkless' decoupled GRPO (arXiv 2505.13379 Eq. 5): the first completion token (the mode "
                "decision) weighs α/(1+α) of each completion's loss whatever its length (training.decoupled); "
                "0: TRL's plain per-sequence mean (1/length). Needs loss_type grpo"})
    merge_lora: bool = field(default=True, metadata={"help": "merge LoRA adapters into the saved checkpoint"})
    seed_data: int = field(default=1, metadata={"help": "seed for sampling positions / examples (arith: 2 and 3 are the dev/test seeds)"})

    def __post_init__(self) -> None:
        if self.task not in ("ntr", "arith", "hops", "mix"):
            raise ValueError(f"task must be 'ntr', 'arith', 'hops' or 'mix', got {self.task!r}")
        bad = [s for s in self.mix_sets if s not in MIX_SETS]
        if bad or not self.mix_sets:  # letters and times stay held out: they show whether the decision transfers
            raise ValueError(f"mix_sets must be a non-empty subset of {list(MIX_SETS)} (the held-out families "
                             f"letters and times are never trained on), got {self.mix_sets}")
        if self.task == "mix" and self.seed_data != 1:
            raise ValueError(f"seed_data must be 1 for mix (the train split; 2 = dev, 3 = test), got {self.seed_data}")
        bad = [t for t in self.hops_types if t not in HOPS_TYPES]
        if bad or not self.hops_types:
            raise ValueError(f"hops_types must be a non-empty subset of {list(HOPS_TYPES)}, got {self.hops_types}")
        if self.search_cost < 0:
            raise ValueError(f"search_cost must be >= 0, got {self.search_cost}")
        if self.task == "hops" and self.seed_data != 1:
            raise ValueError(f"seed_data must be 1 for hops (the train split's entities; 2 = dev, 3 = test), got {self.seed_data}")
        if not 0.0 <= self.think_share <= 1.0:
            raise ValueError(f"think_share must be in [0, 1], got {self.think_share}")
        for name in ("num_examples", "direct_tokens", "answer_tokens", "window", "context_tokens", "continuation_tokens", "think_budget", "overlong_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ig_clip <= 0:
            raise ValueError(f"ig_clip must be > 0 nats, got {self.ig_clip}")
        if self.eval_examples < 0:
            raise ValueError(f"eval_examples must be >= 0, got {self.eval_examples}")
        if not 0.0 <= self.easy_share <= 1.0:
            raise ValueError(f"easy_share must be in [0, 1], got {self.easy_share}")
        if self.task == "arith" and self.seed_data in (2, 3):
            raise ValueError(f"seed_data must not be a held-out seed (2 = dev, 3 = test), got {self.seed_data}")
        if self.entropy_threshold < 0:
            raise ValueError(f"entropy_threshold must be >= 0 nats, got {self.entropy_threshold}")
        check_mode_token_weight(self.mode_token_weight)
        if self.mode_token_weight > 0 and self.mask_forced:
            raise ValueError("mode_token_weight > 0 weights the first token that mask_forced drops: set one of them")
        if self.reward_funcs is None:
            self.reward_funcs = list({"ntr": NTR_REWARDS, "arith": ARITH_REWARDS, "hops": HOPS_REWARDS,
                                      "mix": MIX_REWARDS}[self.task])
