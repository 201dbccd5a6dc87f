"""``/schema``, the browsable API page of both services, takes every file it loads from the service itself.

Litestar's pages load their JavaScript from a CDN; these check, over HTTP against the real processes, that the
page names only the service's own asset paths and that those are served, cacheable, and nothing else is.
(tests/browser/test_schema_page.py renders the page in Chromium with every other host blocked.)
"""

import re

import httpx
import pytest

from services.shared.openapi_ui.pages import ASSETS, CACHE_CONTROL, SWAGGER_UI_VERSION
from tests.support import Pipeline

ASSET_BASE = f"/schema/assets/{SWAGGER_UI_VERSION}/"


def service_url(pipeline: Pipeline, service: str) -> str:
    return pipeline.votes_url if service == "votes" else pipeline.read_url


@pytest.mark.parametrize("service", ["votes", "read"])
@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_the_page_loads_only_the_services_own_files(
    pipeline: Pipeline, client: httpx.Client, service: str, path: str
) -> None:
    response = client.get(service_url(pipeline, service) + path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
    assert sorted(loaded) == sorted(ASSET_BASE + name for name in ASSETS)
    assert "://" not in " ".join(loaded)


@pytest.mark.parametrize("service", ["votes", "read"])
def test_the_assets_are_served_with_a_long_cache_lifetime(
    pipeline: Pipeline, client: httpx.Client, service: str
) -> None:
    url = service_url(pipeline, service)
    for name, media_type in ASSETS.items():
        response = client.get(url + ASSET_BASE + name)
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] == media_type.split(";")[0]
        assert response.headers["cache-control"] == CACHE_CONTROL
        assert len(response.content) > 500, name
    assert b"SwaggerUIBundle" in client.get(url + ASSET_BASE + "swagger-ui-bundle.js").content


@pytest.mark.parametrize("name", ["package.json", "LICENSE", "..%2Fpages.py", "swagger-ui.css.map"])
def test_nothing_else_in_the_folder_is_served(pipeline: Pipeline, client: httpx.Client, name: str) -> None:
    response = client.get(pipeline.votes_url + ASSET_BASE + name)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_the_openapi_documents_stay_where_they_were(pipeline: Pipeline, client: httpx.Client) -> None:
    for url in (pipeline.votes_url, pipeline.read_url):
        document = client.get(url + "/schema/openapi.json")
        assert document.status_code == 200
        assert document.json()["openapi"].startswith("3.")
        assert client.get(url + "/schema/openapi.yaml").status_code == 200
    paths = client.get(pipeline.votes_url + "/schema/openapi.json").json()["paths"]
    assert "/v1/comparisons/{comparison_id}/votes" in paths
    assert not any(path.startswith("/schema") for path in paths)
