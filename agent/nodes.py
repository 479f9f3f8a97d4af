"""The graph's nodes: each is ``(State, Runtime[Context]) → partial update``.

- `retrieve`: embed the question (plus recent user turns), take the top-k passages that score at
  least `min_passage_score`, build the prompt (`tasks.prompt`, as trained), reset the turn.
- `gate`: greedily draft `draft_tokens` answer tokens and score their entropy. With an
  `answer_prefix` (``Answer:``, the Qwen models' calibration) the draft is a forced direct answer,
  so the score measures the answer, not the confident opening of a solution. Confident →
  the draft stays in the transcript and `answer` continues it (no extra forward pass).
  Uncertain, or the model opened ``<think>`` itself (the draft stops there: a warmed-up model's
  own decision) → ``<think>`` is appended instead. `reasoning_effort` none/high bypass the test.
  With ``decision`` "learned" (a checkpoint of `training.decision`) the model's first token decides
  instead — the think token → think, else the draft is the answer —; "both" thinks when either does.
- `think_step`: one reasoning step, ending at a blank line, ``</search>``, ``</think>`` or
  `step_tokens`. A ``<search>`` call, or a step whose mean entropy exceeds τ_retrieve,
  leaves a `pending_query`.
- `retrieve_more`: run the pending query; new passages are appended as an ``<information>``
  block (sanitized, numbered after the earlier ones).
- `probe`: stop at a budget; else draft `probe_tokens` answer tokens after ``</think>``; a
  draft at or below τ_exit ends thinking and is kept as the answer's start. A rejected probe
  is rolled back simply by not appending it (the backend's prefix cache crops it).
- `answer`: close ``<think>`` if open, continue the answer to the token budget (ending it where the model
  would open ``<think>`` inside it: `UntilTag`, nothing of the tag streamed), append the
  AI message.
- `vote`: self-consistency after thinking that ended uncertain, when the request asked for it
  (reasoning_effort=high or max_samples > 1): adaptive sampling and a majority vote.

Text pieces go to LangGraph's custom stream as ``{"type": "content"|"reasoning", "text"}``.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from agent.state import Context, State
from agent.turn import TokenBudget, completion_left, empty_counts, hidden_left
from agent.voting import beta_stop, normalize_answer
from agent.voting import vote as majority
from policy.base import Generation, GenerationParams
from policy.entropy import aggregate
from policy.format import THINK_CLOSE, THINK_OPEN, find_search
from tasks.prompt import build_messages, information_turn, select_passages

STEP_STOPS = ("\n\n", "</search>", THINK_CLOSE)


def _text(msg) -> str:
    c = msg.content
    if isinstance(c, list):  # OpenAI content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in c)
    return str(c)


def _role(msg) -> str:
    return {"human": "user", "ai": "assistant"}.get(msg.type, msg.type)


def answer_lead(runtime: Runtime[Context]) -> list[int]:
    """Token ids of `AgentConfig.answer_prefix` (e.g. ``Answer:``), forced before every direct answer
    the agent drafts, probes or writes after ``</think>``; empty when the prefix is "". The prefix
    is prompt, not completion: it is never streamed nor counted in ``usage``."""
    prefix = runtime.context.config.answer_prefix
    return runtime.context.policy.tokenize(prefix) if prefix else []


def answer_opening(policy, answer_prefix: str, model_closed: bool) -> list[int]:
    """Token ids appended between reasoning and the answer that follows it: ``\\n</think>\\n`` then
    `answer_prefix` when the agent closes thinking; after the model's own ``</think>``, ``\\n`` then the
    prefix (nothing when there is no prefix). Shared by `probe`, `answer` and the evaluation
    (`evals.quality`), so what is measured is what is served."""
    lead = policy.tokenize(answer_prefix) if answer_prefix else []
    if model_closed:
        return policy.tokenize("\n") + lead if lead else []
    return policy.tokenize("\n" + THINK_CLOSE + "\n") + lead


async def _run(runtime: Runtime[Context], ids: list[int], params: GenerationParams, kind: str | None) -> Generation:
    """Generate from `ids`; when `kind` is set, stream each text delta as that kind."""
    emit = None if kind is None else (lambda text: runtime.stream_writer({"type": kind, "text": text}))
    return await runtime.context.policy.generate(ids, params, on_text=emit)


class UntilTag:
    """A text stream cut before the first `tag`: `push` passes text on to `emit` but holds back a tail
    that could be the start of `tag`; once `tag` appears, what follows it is dropped; `flush` sends
    what is held back (at the end of the stream); `text` is all it passed on.

    >>> out = []
    >>> g = UntilTag("<think>", out.append)
    >>> for piece in ["12 is the", " answer. <", "thi", "nk>more"]:
    ...     g.push(piece)
    >>> g.flush()
    >>> "".join(out) == g.text == '12 is the answer. '
    True
    """

    def __init__(self, tag: str, emit: Callable[[str], None]):
        self.tag, self.emit, self.held, self.done = tag, emit, "", False
        self.text = ""  # everything passed on so far: the answer as streamed

    def _pass(self, piece: str) -> None:
        self.text += piece
        self.emit(piece)

    def push(self, text: str) -> None:
        if self.done:
            return
        buf = self.held + text
        cut = buf.find(self.tag)
        if cut >= 0:
            self._pass(buf[:cut])
            self.held, self.done = "", True
            return
        keep = next((k for k in range(min(len(self.tag) - 1, len(buf)), 0, -1) if buf.endswith(self.tag[:k])), 0)
        self._pass(buf[:len(buf) - keep])
        self.held = buf[len(buf) - keep:]

    def flush(self) -> None:
        if not self.done and self.held:
            self._pass(self.held)
        self.held = ""


def _strip_eos(runtime: Runtime[Context], gen: Generation) -> list[int]:
    eos = set(runtime.context.policy.eos_token_ids)
    return gen.token_ids[:-1] if gen.token_ids and gen.token_ids[-1] in eos else list(gen.token_ids)


def _emit(runtime: Runtime[Context], kind: str, text: str) -> None:
    if text:
        runtime.stream_writer({"type": kind, "text": text})


def _budget(state: State, cfg) -> TokenBudget:
    return TokenBudget.split(state.get("max_tokens"), cfg, state.get("samples") or 1)


def trace_entropy(state: State) -> float:
    """Mean entropy (nats) over the turn's reasoning tokens (token-weighted over its steps)."""
    steps = state.get("steps") or []
    n = sum(s["tokens"] for s in steps)
    return sum(s["entropy"] * s["tokens"] for s in steps) / n if n else 0.0


def voting_armed(state: State, cfg=None) -> bool:
    """Self-consistency runs on this turn: voting was asked for (samples > 1), the turn thought,
    thinking did not end on a certain probe, and the reasoning's mean entropy exceeds τ_vote."""
    tau_vote = cfg.tau_vote if cfg is not None else 0.0
    return ((state.get("samples") or 1) > 1 and state.get("decision") == "think"
            and state.get("exit_reason") != "certain" and (tau_vote <= 0 or trace_entropy(state) > tau_vote))


async def _search(runtime: Runtime[Context], query: str, k: int, seen: set[int], start_n: int,
                  trigger: str) -> tuple[list[dict], dict]:
    ctx = runtime.context
    t0 = time.perf_counter()
    hits = await ctx.retriever.asearch(query, k + len(seen)) if ctx.retriever is not None else []
    new = select_passages(hits, k, min_score=ctx.config.min_passage_score, seen=seen, start_n=start_n,
                          special_tokens=ctx.policy.special_tokens, trigger=trigger)
    rec = {"query": query, "trigger": trigger, "passages": [p["n"] for p in new],
           "ms": round((time.perf_counter() - t0) * 1000, 2)}
    return new, rec


async def retrieve(state: State, runtime: Runtime[Context]) -> dict:
    """Retrieve for the newest user message and build the prompt; resets the turn's fields."""
    ctx, cfg = runtime.context, runtime.context.config
    msgs = state["messages"]
    question = _text(msgs[-1]).strip()
    earlier = [(_role(m), _text(m)) for m in msgs[:-1] if _role(m) in ("user", "assistant")]
    users = [c for r, c in earlier if r == "user"][-cfg.query_turns:] if cfg.query_turns else []
    query = "\n".join(users + [question])
    passages, rec = await _search(runtime, query, cfg.top_k, set(), 1, "question")
    history = earlier[-2 * cfg.history_turns:] if cfg.history_turns else []
    prompt = ctx.policy.chat_prompt(build_messages(question, passages, history, state.get("instructions", "")))
    return {
        "question": question, "passages": passages, "transcript": prompt, "prompt_tokens": len(prompt),
        "draft": {}, "score": {}, "decision": "", "reason": "", "steps": [],
        "retrievals": [rec] if ctx.retriever is not None else [], "pending_query": None,
        "exit_reason": "", "closed": False, "reasoning": "", "answer": "", "finish_reason": "", "votes": {},
        "tokens": empty_counts(len(prompt)),
    }


async def gate(state: State, runtime: Runtime[Context]) -> dict:
    """Draft the direct answer, score its entropy, decide: answer now or think.

    The draft is hidden work when discarded, so it never exceeds the turn's thinking budget; a
    budget too small to draft or to think answers at once."""
    ctx, cfg = runtime.context, runtime.context.config
    effort = state.get("effort", "auto")
    tokens = dict(state["tokens"])
    transcript = list(state["transcript"])
    budget = _budget(state, cfg)
    no_room = f"max_completion_tokens={budget.total} leaves no room to think"
    if effort == "high":
        if budget.think < 1:
            return {"decision": "answer", "reason": f"reasoning_effort=high, but {no_room}", "tokens": tokens}
        think = ctx.policy.tokenize(THINK_OPEN + "\n")
        return {"decision": "think", "reason": "reasoning_effort=high: always think",
                "transcript": transcript + think, "tokens": tokens}
    n_draft = min(cfg.draft_tokens, budget.total if effort == "none" else budget.think)
    if n_draft < 1:
        return {"decision": "answer", "reason": no_room, "tokens": tokens}
    learned = None  # the model's own first token (decision "learned" / "both"): True = the think token
    if effort == "auto" and cfg.decision != "entropy":
        first = await _run(runtime, transcript, GenerationParams(max_tokens=1), None)
        learned = first.token_ids[:1] == ctx.policy.tokenize(THINK_OPEN)[:1]
        tokens["probe"] = tokens["probe"] + len(first.token_ids)  # hidden work, rolled back by the prefix cache
        if learned and budget.think - len(first.token_ids) >= 1:
            return {"decision": "think", "reason": f"decision={cfg.decision}: the model's first token opens <think>",
                    "transcript": transcript + ctx.policy.tokenize(THINK_OPEN + "\n"), "tokens": tokens,
                    "score": {"first_token_entropy": first.entropies[0] if first.entropies else 0.0}}
    # the draft ends at the first paragraph break (what a model rambles after its answer is not
    # scored) or as soon as the model opens <think> itself (a warmed-up model's decision)
    lead = answer_lead(runtime)  # the direct answer is forced ("Answer:"): its entropy is the signal
    gen = await _run(runtime, transcript + lead, GenerationParams(max_tokens=n_draft, stop=("\n\n", THINK_OPEN)),
                     None)
    score = aggregate(gen.entropies, gen.varentropies)
    value = score[cfg.score]
    tokens["draft"] = len(gen.token_ids)
    draft = {"text": gen.text, "tokens": len(gen.token_ids), "finish_reason": gen.finish_reason,
             "entropies": [round(e, 4) for e in gen.entropies]}
    if effort == "none":
        decision, reason = "answer", "reasoning_effort=none: never think"
    elif THINK_OPEN in gen.text:
        decision, reason = "think", "the model opened <think> itself"
    elif learned is not None and cfg.decision == "learned":
        decision, reason = "answer", "decision=learned: the model's first token answers at once"
    elif value <= cfg.tau_think:
        decision, reason = "answer", f"draft {cfg.score} entropy {value:.3f} <= tau_think {cfg.tau_think}"
    else:
        decision, reason = "think", f"draft {cfg.score} entropy {value:.3f} > tau_think {cfg.tau_think}"
    if decision == "think" and budget.think - len(gen.token_ids) < 1:
        decision, reason = "answer", f"{reason}, but {no_room} after the draft"
    # a draft that opened <think> where the turn may not think (effort none, no room) is no answer:
    # it is discarded and the answer follows an empty, closed thought (the no-think form of
    # reasoning chat models, e.g. Qwen3's enable_thinking=False), so the model answers, not re-opens
    keep = decision == "answer" and THINK_OPEN not in gen.text
    update = {"draft": draft, "score": score, "decision": decision, "reason": reason, "tokens": tokens}
    if not keep:
        tokens["probe"], tokens["draft"] = tokens["probe"] + tokens["draft"], 0
    if decision == "answer" and keep:
        _emit(runtime, "content", gen.text.lstrip() if lead else gen.text)
        update["transcript"] = transcript + lead + gen.token_ids
        update["answer"] = gen.text
        ended = gen.finish_reason == "stop" and not isinstance(gen.stop_reason, str)  # EOS, not "\n\n"
        if ended or len(gen.token_ids) >= budget.total:
            update["finish_reason"] = "stop" if ended else "length"
    elif decision == "answer":  # the draft opened <think>: answer after an empty, closed thought
        update["transcript"] = transcript + ctx.policy.tokenize(f"{THINK_OPEN}\n{THINK_CLOSE}\n") + lead
    elif decision == "think":  # the draft is discarded (counted as hidden probe work above)
        update["transcript"] = transcript + ctx.policy.tokenize(THINK_OPEN + "\n")
    return update


def _sampling(state: State) -> dict:
    """The client's sampling parameters for reasoning and answer tokens (the gate's draft and the
    probes stay greedy: their entropy is the signal)."""
    return {"temperature": state.get("temperature", 0.0) or 0.0, "top_p": state.get("top_p", 1.0) or 1.0,
            "seed": state.get("seed")}


async def think_step(state: State, runtime: Runtime[Context]) -> dict:
    """One reasoning step inside <think>; may leave a pending retrieval query."""
    ctx, cfg = runtime.context, runtime.context.config
    tokens = dict(state["tokens"])
    left = min(cfg.max_think_tokens - tokens["reasoning"], hidden_left(tokens, _budget(state, cfg)))
    if left < 1:  # the routing never sends a turn here without budget; kept as a guard
        return {"exit_reason": "budget"}
    params = GenerationParams(max_tokens=min(cfg.step_tokens, left), stop=STEP_STOPS, **_sampling(state))
    gen = await _run(runtime, state["transcript"], params, "reasoning")
    ids = _strip_eos(runtime, gen)
    ended = len(ids) < len(gen.token_ids)
    tokens["reasoning"] += len(ids)
    score = aggregate(gen.entropies)
    n = len(state["steps"]) + 1
    text = ctx.policy.detokenize(ids)
    step = {"n": n, "text": text.strip(), "tokens": len(ids), "chars": len(text), "entropy": round(score["mean"], 4),
            "max_entropy": round(score["max"], 4), "search": None, "probe": None}
    update: dict = {"transcript": state["transcript"] + ids, "tokens": tokens,
                    "reasoning": state.get("reasoning", "") + text, "pending_query": None}
    if THINK_CLOSE in text:
        update.update(exit_reason="model_closed", closed=True)
    elif ended:
        update["exit_reason"] = "model_ended"
    else:
        n_model = sum(1 for r in state["retrievals"] if r["trigger"] != "question")
        query = find_search(text)
        if query and n_model < cfg.max_retrievals:
            update["pending_query"] = {"query": query, "trigger": "model"}
        elif score["mean"] > cfg.tau_retrieve and n_model < cfg.max_retrievals and text.strip():
            update["pending_query"] = {"query": text.strip()[-300:], "trigger": "entropy"}
        step["search"] = update["pending_query"]
    update["steps"] = state["steps"] + [step]
    return update


async def retrieve_more(state: State, runtime: Runtime[Context]) -> dict:
    """Run the pending query; append new passages to the transcript as an <information> block."""
    ctx, cfg = runtime.context, runtime.context.config
    pq = state["pending_query"]
    seen = {p["id"] for p in state["passages"]}
    new, rec = await _search(runtime, pq["query"], cfg.step_k, seen, len(state["passages"]) + 1, pq["trigger"])
    tokens = dict(state["tokens"])
    update: dict = {"pending_query": None, "retrievals": state["retrievals"] + [rec], "tokens": tokens}
    if new:
        block = information_turn(new)
        ids = ctx.policy.tokenize(block)
        tokens["information"] += len(ids)
        _emit(runtime, "reasoning", block)
        update.update(transcript=state["transcript"] + ids, passages=state["passages"] + new,
                      reasoning=state["reasoning"] + block)
    return update


async def probe(state: State, runtime: Runtime[Context]) -> dict:
    """Stop on a budget; else draft the answer after </think> and stop thinking if it is certain."""
    ctx, cfg = runtime.context, runtime.context.config
    tokens = dict(state["tokens"])
    if len(state["steps"]) >= cfg.max_steps:
        return {"exit_reason": "budget", "reason": state["reason"] + f"; stopped at max_steps={cfg.max_steps}"}
    if tokens["reasoning"] >= cfg.max_think_tokens:
        return {"exit_reason": "budget", "reason": state["reason"] + f"; stopped at max_think_tokens={cfg.max_think_tokens}"}
    budget = _budget(state, cfg)
    left = hidden_left(tokens, budget)
    if left < 1:
        return {"exit_reason": "budget", "reason": state["reason"] + f"; stopped at the thinking budget of "
                                                                     f"{budget.think} tokens"}
    prefix = state["transcript"] + answer_opening(ctx.policy, cfg.answer_prefix, model_closed=False)
    gen = await _run(runtime, prefix, GenerationParams(max_tokens=min(cfg.probe_tokens, left)), None)
    tokens["probe"] += len(gen.token_ids)
    score = aggregate(gen.entropies)
    steps = [dict(s) for s in state["steps"]]
    steps[-1]["probe"] = {"text": gen.text, "entropy": round(score["mean"], 4)}
    update: dict = {"steps": steps, "tokens": tokens}
    if score["mean"] <= cfg.tau_exit:
        tokens["probe"] -= len(gen.token_ids)  # kept: these tokens are the answer's start
        tokens["draft"] += len(gen.token_ids)
        _emit(runtime, "content", gen.text.lstrip())
        update.update(exit_reason="certain", closed=True, transcript=prefix + gen.token_ids, answer=gen.text,
                      reason=state["reason"] + f"; probe entropy {score['mean']:.3f} <= tau_exit {cfg.tau_exit} "
                                               f"after step {len(steps)}")
        if gen.finish_reason == "stop" or completion_left(tokens, budget) < 1:
            update["finish_reason"] = "stop" if gen.finish_reason == "stop" else "length"
    elif hidden_left(tokens, budget) < 1:
        update.update(exit_reason="budget", reason=state["reason"] + f"; stopped at the thinking budget of "
                                                                     f"{budget.think} tokens")
    return update


async def answer(state: State, runtime: Runtime[Context]) -> dict:
    """Finish the answer from the transcript; append it to the conversation."""
    ctx, cfg = runtime.context, runtime.context.config
    tokens = dict(state["tokens"])
    transcript = list(state["transcript"])
    text = state.get("answer", "")
    finish = state.get("finish_reason", "")
    if state["decision"] == "think" and (not state.get("closed") or state.get("exit_reason") == "model_closed"):
        transcript += answer_opening(ctx.policy, cfg.answer_prefix, state.get("exit_reason") == "model_closed")
    reasoning = state.get("reasoning", "")
    # with a vote coming, this greedy answer is its first sample: shown as reasoning; the vote sends
    # the chosen answer as content
    kind = "reasoning" if voting_armed(state, cfg) else "content"
    if kind == "reasoning":
        _emit(runtime, kind, "\n[sample 1: greedy] ")
    if state.get("exit_reason") == "model_ended" and state["steps"]:
        # the model ended its turn inside <think>: its last step is its answer (tokens and text move over)
        last = state["steps"][-1]
        text, finish = last["text"], "stop"
        tokens["reasoning"] -= last["tokens"]
        tokens["answer"] += last["tokens"]
        reasoning = reasoning[: len(reasoning) - last["chars"]]
        _emit(runtime, kind, text)
    if not finish:
        left = completion_left(tokens, _budget(state, cfg))
        if left > 0:
            # an answer ends where the model would open <think> inside it (the tag is never shown, streamed or not)
            guard = UntilTag(THINK_OPEN, lambda piece: _emit(runtime, kind, piece))
            gen = await runtime.context.policy.generate(transcript, GenerationParams(
                max_tokens=left, stop=(THINK_OPEN,), **_sampling(state)), on_text=guard.push)
            guard.flush()
            tokens["answer"] += len(gen.token_ids)
            transcript += gen.token_ids
            text += guard.text  # the same text streamed and returned
            finish = gen.finish_reason
        else:
            finish = "length"
    text = text.strip()
    if state["decision"] == "think" and THINK_CLOSE in text:  # a model that closed thinking inside the answer
        text = text.split(THINK_CLOSE, 1)[1].strip()
    return {"answer": text, "finish_reason": finish, "transcript": transcript, "tokens": tokens,
            "reasoning": reasoning, "messages": [AIMessage(content=text, id=uuid.uuid4().hex)]}


def sample_answer(text: str) -> str:
    r"""The answer of a voting sample generated after a forced ``<think>``: the text after its last
    ``</think>``, else its last non-empty line.

    >>> sample_answer("2 + 3 = 5\n</think>\nThe answer is 5.")
    'The answer is 5.'
    >>> sample_answer("2 + 3 = 5\nso 5")
    'so 5'
    """
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1].strip()
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


async def vote(state: State, runtime: Runtime[Context]) -> dict:
    """Self-consistency when `voting_armed`: sample reasoning+answer completions from the prompt
    (``<think>`` forced, `vote_temperature`, seeds recorded), one at a time, until the Beta rule
    of Adaptive-Consistency (`agent.voting.beta_stop`) or `samples` or the token budget; the
    greedy answer is sample 1. The majority answer (ties: larger summed certainty = −mean entropy
    of the answer tokens, the greedy sample counting 0, i.e. most certain) replaces the greedy one
    when it differs, in the answer and the thread."""
    ctx, cfg = runtime.context, runtime.context.config
    if not voting_armed(state, cfg):
        return {}
    tokens = dict(state["tokens"])
    budget = _budget(state, cfg)
    cap = state.get("samples") or 1
    prefix = list(state["transcript"][: state["prompt_tokens"]]) + ctx.policy.tokenize(THINK_OPEN + "\n")
    greedy = state.get("answer", "")
    keys, cert, texts = [normalize_answer(greedy)], [0.0], [greedy]
    records = [{"n": 1, "answer": greedy, "key": keys[0], "certainty": None, "tokens": 0, "seed": None}]
    stop = "max_samples"
    base_seed = state.get("seed") if state.get("seed") is not None else 0
    while len(keys) < cap:
        if beta_stop(Counter(keys), cfg.vote_confidence):
            stop = "decisive"
            break
        n_max = min(cfg.sample_tokens, completion_left(tokens, budget))
        if n_max < 8:
            stop = "budget"
            break
        n = len(keys) + 1
        seed = base_seed + n
        _emit(runtime, "reasoning", f"\n[sample {n}/{cap}] ")
        gen = await _run(runtime, prefix, GenerationParams(max_tokens=n_max, temperature=cfg.vote_temperature,
                                                           seed=seed), "reasoning")
        tokens["samples"] += len(gen.token_ids)
        ans = sample_answer(gen.text)
        n_ans = max(1, min(len(gen.entropies), len(ctx.policy.tokenize(ans)) if ans else 1))
        certainty = -sum(gen.entropies[-n_ans:]) / n_ans if gen.entropies else 0.0
        keys.append(normalize_answer(ans))
        cert.append(certainty)
        texts.append(ans)
        records.append({"n": n, "answer": ans, "key": keys[-1], "certainty": round(certainty, 4),
                        "tokens": len(gen.token_ids), "seed": seed})
    else:
        stop = "decisive" if beta_stop(Counter(keys), cfg.vote_confidence) else "max_samples"
    chosen, counts = majority(keys, cert)
    answer = texts[keys.index(chosen)]
    _emit(runtime, "content", answer)
    update: dict = {"tokens": tokens, "answer": answer,
                    "votes": {"samples": records, "counts": dict(counts), "chosen": chosen, "stop": stop,
                              "changed": chosen != keys[0]}}
    if chosen != keys[0]:
        last = state["messages"][-1]
        update["messages"] = [AIMessage(content=answer, id=last.id)]  # replaces the greedy answer in the thread
    return update
