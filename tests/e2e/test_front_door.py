"""The API's front door: a public OpenAPI document, its docs page served from the package,
and each template's parameters as a JSON Schema."""

from __future__ import annotations

import re

from tests.e2e.conftest import Api


def test_the_openapi_document_is_public_and_documents_without_leaking(api_server: Api) -> None:
    response = api_server.call("GET", "/openapi.json", key=None)
    assert response.status_code == 200
    spec = response.json()
    assert "/execute" in spec["paths"] and "/templates/{name}" in spec["paths"]
    template_out = spec["components"]["schemas"]["TemplateOut"]
    assert "parameters_schema" in template_out["properties"]
    # Public, so nothing a client made: no template's parameters, no key, no execution.
    assert not any(name.endswith(".parameters") for name in spec["components"]["schemas"])
    assert "orch_" not in response.text and "exec_" not in response.text
    # With a client key it also publishes each template's parameters.
    keyed = api_server.call("GET", "/openapi.json").json()
    linear5 = keyed["components"]["schemas"]["linear5.parameters"]
    assert linear5["properties"]["start"]["anyOf"][0] == {"type": "integer", "default": 1}
    assert api_server.call("GET", "/openapi.json", key=None, headers={}).status_code == 200
    bad = api_server.http.get("/openapi.json", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_the_docs_page_is_served_from_the_package_with_no_cdn(api_server: Api) -> None:
    page = api_server.http.get("/docs", follow_redirects=True)
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert not re.search(r"(src|href)=\"https?://", page.text), "a file from outside"
    assert "/openapi.json" in page.text
    for asset in re.findall(r"(?:src|href)=\"([^\"]+\.(?:js|css))\"", page.text):
        served = api_server.http.get(str(page.url.join(asset)))
        assert served.status_code == 200 and len(served.content) > 1000, asset


def test_a_template_publishes_its_parameters_as_json_schema(api_server: Api) -> None:
    body = api_server.call("GET", "/templates/slow").json()
    schema = body["parameters_schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["seconds"]["anyOf"][0] == {"type": "number", "default": 2}
    assert schema["required"] == []
