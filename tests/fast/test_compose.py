"""training.compose: two LoRA stages, the second trained on the merge of the first, joined into one adapter
whose merge equals merging the stages one after the other (tiny random Qwen2, no weights downloaded)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import tiny_qwen2


ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _random_lora(model, r: int, alpha: int, seed: int, layers=None, modules=ALL):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(modules), init_lora_weights=False,
                     layers_to_transform=layers, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def test_composed_adapter_equals_the_stages_merged_in_turn(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.compose import compose

    base_dir = tmp_path / "base"
    tiny_qwen2(64, seed=1).save_pretrained(base_dir)
    # stage 1: every layer and projection; stage 2 (trained on stage 1's merge): top layer, two projections,
    # another rank and alpha
    s1 = _random_lora(AutoModelForCausalLM.from_pretrained(base_dir), r=4, alpha=8, seed=2)
    s1.save_pretrained(tmp_path / "s1")
    merged1 = s1.merge_and_unload()
    merged1.save_pretrained(tmp_path / "m1")
    s2 = _random_lora(AutoModelForCausalLM.from_pretrained(tmp_path / "m1"), r=2, alpha=8, seed=3, layers=[1],
                      modules=("v_proj", "down_proj"))
    s2.save_pretrained(tmp_path / "s2")
    sequential = s2.merge_and_unload().state_dict()

    f = compose(base_dir, [tmp_path / "s1", tmp_path / "s2"], tmp_path / "joined")
    cfg = json.loads((tmp_path / "joined" / "adapter_config.json").read_text())
    assert f.is_file() and cfg["r"] == 6 and cfg["base_model_name_or_path"] == str(base_dir)
    joined = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                       str(tmp_path / "joined")).merge_and_unload().state_dict()
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    moved = 0
    for k, w in sequential.items():
        assert torch.allclose(joined[k], w, atol=2e-3), k  # fp16 adapter file
        moved += not torch.equal(w, base[k])
    assert moved == 7 * 2  # every adapted projection moved, and the join matches them all


def test_compose_refuses_a_later_stage_wider_than_the_first(tmp_path):
    from transformers import AutoModelForCausalLM

    from training.compose import compose

    tiny_qwen2(64, seed=1).save_pretrained(tmp_path / "base")
    load = lambda: AutoModelForCausalLM.from_pretrained(tmp_path / "base")  # noqa: E731
    _random_lora(load(), 2, 4, 0, modules=("q_proj",)).save_pretrained(tmp_path / "narrow")
    _random_lora(load(), 2, 4, 0).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="adapts down_proj, which the first adapter does not"):
        compose(tmp_path / "base", [tmp_path / "narrow", tmp_path / "wide"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_compose_refuses_a_single_or_missing_adapter(tmp_path):
    from training.compose import compose

    with pytest.raises(ValueError, match="at least two"):
        compose(tmp_path, [tmp_path / "a"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no PEFT adapter"):
        compose(tmp_path, [tmp_path / "a", tmp_path / "b"], tmp_path / "out")
