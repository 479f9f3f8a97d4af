"""Integration: the CPU smoke recipe on the real SmolLM2-135M (2 GRPO steps), then the agent answers with it."""
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
