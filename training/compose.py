"""``python -m training.compose``: stack LoRA adapters trained one on top of another into one adapter.

A stage trained on the merged result of an earlier stage (the first-token decision of `training.decision`
on the merged reference warm-up of `training.sft`) holds only its own update. What is served is one
adapter file (README "Models"), so the stages are joined by concatenating their ranks — PEFT's
``add_weighted_adapter(..., combination_type="cat")``: for every module, A = [s₁A₁; s₂A₂], B = [B₁, B₂]
at scale 1, so B·A = s₁B₁A₁ + s₂B₂A₂, exactly the sum of the stages' updates (a module one stage does not
touch gets zeros in its rows). The rank of the result is the sum of the ranks.

Contract:
- `compose(base, adapters, out, base_name)`: the PEFT adapters in `adapters` (directories, in training order; the
  first one's ``layers_to_transform`` must cover every layer any later one touches) loaded on `base` (a
  float32 checkpoint dir) and written as one adapter into `out` (fp16 safetensors + ``adapter_config.json``).
  Returns the safetensors path. Raises FileNotFoundError for a missing adapter and ValueError for fewer than two.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _check_first_covers(adapters: list[str | Path]) -> None:
    """The composed adapter has the first stage's layers and modules (PEFT's ``cat`` keeps its config), so
    every later stage must touch only those: raises ValueError naming the first module or layer outside."""
    import json

    cfgs = [json.loads((Path(a) / "adapter_config.json").read_text()) for a in adapters]
    first_modules = set(cfgs[0]["target_modules"])
    first_layers = cfgs[0].get("layers_to_transform")
    for a, c in zip(adapters[1:], cfgs[1:]):
        extra = sorted(set(c["target_modules"]) - first_modules)
        if extra:
            raise ValueError(f"{a} adapts {extra[0]}, which the first adapter does not: put the widest adapter first")
        if first_layers is not None:
            layers = c.get("layers_to_transform")
            if layers is None or set(layers) - set(first_layers):
                raise ValueError(f"{a} adapts layers outside the first adapter's {first_layers}")


def compose(base: str | Path, adapters: list[str | Path], out: str | Path, base_name: str | None = None) -> Path:
    """Join `adapters` (each ΔW = s·B·A, trained in this order, each on the merge of the ones before)
    into one LoRA adapter whose ΔW is their sum (module docstring); writes it into `out`, its config naming
    `base_name` (e.g. the registered name) as the base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.decision import save_adapter_fp16

    if len(adapters) < 2:
        raise ValueError(f"compose needs at least two adapters, got {len(adapters)}")
    for a in adapters:
        if not (Path(a) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no PEFT adapter (adapter_config.json) in {a}")
    _check_first_covers(adapters)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    names = [f"stage{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, a in zip(names[1:], adapters[1:]):
        model.load_adapter(str(a), adapter_name=name)
    # "default": the one adapter name PEFT saves at the top of `out` (others go into subdirectories)
    model.add_weighted_adapter(names, [1.0] * len(names), "default", combination_type="cat")
    model.set_adapter("default")
    model.peft_config["default"].base_model_name_or_path = base_name or str(base)  # a name, not this machine's path
    for name in names:
        model.delete_adapter(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return save_adapter_fp16(model, out)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m training.compose --base DIR --adapters A B … --out DIR``; bad input exits 2."""
    ap = argparse.ArgumentParser(prog="python -m training.compose", description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="the float32 checkpoint the first adapter was trained on")
    ap.add_argument("--adapters", nargs="+", required=True, help="PEFT adapter dirs, in training order")
    ap.add_argument("--out", required=True, help="where the composed adapter goes")
    args = ap.parse_args(argv)
    from policy.models import resolve_policy

    try:
        f = compose(resolve_policy(args.base), args.adapters, args.out, base_name=args.base)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {f}")


if __name__ == "__main__":
    main()
