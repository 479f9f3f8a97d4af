"""Schemathesis over the app's own OpenAPI spec, in-process ASGI (issue 9): every generated
request, valid or not, gets a response the spec documents (status code, content type, schema),
and never a server error. Bounded examples per operation keep it a few seconds."""
import tempfile
from pathlib import Path

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, settings

from agent.config import AgentConfig
from api.app import create_app
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy


def _script(prompt, kind):
    if kind == "draft":
        return ("Maybe", 3.0, False) if len(prompt) % 2 else ("An answer [1].", 0.2, True)
    if kind == "step":
        return ("A step.\n\n", 0.5, False)
    return ("Done.", 0.1, True)


def _app():
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    retriever = Retriever(tmp / "idx", FakeEmbedder())
    retriever.add_text("doc.md", "# Lists\n\nA list comprehension builds a list.", "md")
    return create_app(Settings(cache_dir=tmp, max_input_chars=4000), policy=MockPolicy(_script), retriever=retriever,
                      agent_config=AgentConfig(tau_think=1.0, tau_exit=0.5, max_steps=2))


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_spec(case):
    # every check but positive_data_acceptance: the spec cannot state every rule a valid request must
    # meet (a blank user message, an unknown model name, a thread of another key), and those are 4xx by design
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
