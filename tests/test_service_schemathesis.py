"""schemathesis against the live service, from its own OpenAPI schema: generated
requests (valid and invalid) to every endpoint get no server error, and every
response matches the schema (status code, content type, body).

``VECPRESS_SERVE_EXAMPLES`` requests per endpoint (default 200; the slow run:
``VECPRESS_SERVE_EXAMPLES=1000 pytest tests/test_service_schemathesis.py``).
Three of every four requests to a collection's endpoints (with a valid name) name a
collection that exists (``docs``, 2-d, and ``cos``, 1-d, both embedding texts: vectors are
at most 2-d here, so that generated ones often fit and are stored, searched, replaced and
deleted); the others keep the generated name.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")
import httpx
import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from _live import threaded_server
from vecpress.service.app import create_app
from vecpress.service.limits import Limits

EXAMPLES = int(os.environ.get("VECPRESS_SERVE_EXAMPLES", "200"))
TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


LIMITS = Limits(max_batch=8, max_queries=4, max_dim=2, max_k=50)  # small: generated bodies fit
#: the service's schema, from an application like the live one (the schema depends on
#: the limits, not on the folder; test_the_live_schema_is_the_one_tested checks it)
SCHEMA = create_app(tempfile.mkdtemp(), token=TOKEN, limits=LIMITS).openapi()
schema = schemathesis.openapi.from_dict(SCHEMA)
_turn = itertools.count()


def _embed(texts):
    """Any text to a 2-d vector (never zero): its length and its characters' sum."""
    return np.asarray([[1.0 + len(t), 1.0 + sum(map(ord, t)) % 97] for t in texts], np.float32)


def _embed1(texts):
    return _embed(texts)[:, :1]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzed")
    app = create_app(root, token=TOKEN, limits=LIMITS, embedders={"docs": _embed, "cos": _embed1})
    with threaded_server(app) as url:
        for name, dim, metric in (("docs", 2, "ip"), ("cos", 1, "cosine")):
            r = httpx.post(f"{url}/collections", headers=AUTH, timeout=60,
                           json={"name": name, "dim": dim, "metric": metric, "flush_rows": 5,
                                 "rerank_spec": "f32"})  # fmt: skip
            assert r.status_code == 201, r.text
        yield url


def test_the_live_schema_is_the_one_tested(live):
    assert httpx.get(f"{live}/openapi.json", timeout=60).json() == SCHEMA


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_generated_requests_get_no_server_error_and_match_the_schema(case, live):
    # a component generated to violate the schema is sent as generated (a negative path
    # name keeps its name, a negative header set goes without the token: 401 or 422)
    meta = case.meta
    negative_path = meta is not None and meta.is_negative_at(ParameterLocation.PATH)
    negative_header = meta is not None and meta.is_negative_at(ParameterLocation.HEADER)
    if case.path_parameters and "name" in case.path_parameters and not negative_path:
        turn = next(_turn)
        if turn % 4:
            case.path_parameters["name"] = "docs" if turn % 3 else "cos"
    headers = None if negative_header else AUTH
    case.call_and_validate(base_url=live, headers=headers, checks=CHECKS, timeout=60)
