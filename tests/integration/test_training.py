"""Integration: the CPU smoke recipes on the real SmolLM2-135M — NTR GRPO, the dual-mode warm-up,
and adaptive GRPO from the warm-up — then the agent answers with the result."""
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
ROOT = Path(__file__).parents[2]


async def test_smoke_recipe_trains_and_agent_serves_result(tmp_path):
    from agent.config import AgentConfig
    from agent.runner import Agent
    from policy.transformers_backend import TransformersPolicy
    from training.grpo import main

    out = tmp_path / "smoke"
    main(["--config", str(ROOT / "training/recipes/cpu_smoke.yaml"), "--output_dir", str(out),
          "--corpus", str(ROOT / "tests/data"), "--num_examples", "8", "--window", "96"])
    for f in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "summary.json", "thinkgate.json"):
        assert (out / f).exists(), f
    policy = TransformersPolicy(str(out), device="cpu")
    agent = Agent(policy, None, AgentConfig.for_model(out))
    turn = await agent.run([{"role": "user", "content": "What is a list comprehension?"}], max_tokens=12)
    assert turn.answer.strip() and turn.metadata["decision"] in ("answer", "think")


async def test_warm_up_then_adaptive_grpo_then_served(tmp_path):
    from agent.config import AgentConfig
    from agent.runner import Agent
    from cli.main import app
    from training.grpo import main as grpo_main
    from typer.testing import CliRunner

    sft = tmp_path / "sft"
    res = CliRunner().invoke(app, ["train", "--stage", "sft", "--config", str(ROOT / "training/recipes/sft_smoke.yaml"),
                                   "--output_dir", str(sft)])
    assert res.exit_code == 0, res.output
    summary = json.loads((sft / "summary.json").read_text())
    assert summary["stage"] == "sft" and summary["rows"] == 32 and summary["steps"] == 2
    rl = tmp_path / "rl"
    grpo_main(["--config", str(ROOT / "training/recipes/grpo_arith_smoke.yaml"), "--model_name_or_path", str(sft),
               "--output_dir", str(rl)])
    recs = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "reward" in r]
    assert len(train) == 2 and "rewards/correct/mean" in train[0] and "rewards/no_think_bonus/mean" in train[0]
    # forced 50/50 rollouts: half open with the think token (only those can read "<think>")
    assert all(0.0 < r["thinkgate/think_rate"] <= 0.5 for r in train)
    assert (rl / "thinkgate.json").exists()
    # served on the default CPU backend: the trained checkpoint is exported once (int8 onnx) and answers
    from policy.models import default_backend, load_policy

    policy = load_policy(str(rl), tmp_path / "cache")
    assert policy.backend == default_backend()
    turn = await Agent(policy, None, AgentConfig.for_model(rl)).run([{"role": "user", "content": "What is 3 + 4?"}],
                                                                     max_tokens=24)
    assert turn.metadata["decision"] in ("answer", "think") and turn.finish_reason in ("stop", "length")
    if policy.backend == "onnx":
        assert list((tmp_path / "cache" / "onnx").glob("rl-*-int8/genai_config.json"))
