"""The examples in docstrings are run: a formula's or a rule's documented cases hold."""
import doctest
import importlib

import pytest

MODULES = ["agent.voting", "agent.turn", "agent.state", "agent.nodes", "retrieval.store", "retrieval.pgstore", "retrieval.retriever",
           "retrieval.eval", "api.auth", "tasks.arithmetic", "policy.format", "policy.base", "training.rewards",
           "training.decoupled", "training.star", "evals.stats", "tasks.numeric", "tasks.docs", "tasks.docs_api", "tasks.hops", "tasks.prompt", "policy.fetch", "evals.quality"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0, f"{res.failed} of {res.attempted} docstring examples failed in {name}"
