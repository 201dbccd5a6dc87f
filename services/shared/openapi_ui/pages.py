"""``/schema``: Swagger UI over the service's OpenAPI document, its files served by the service itself.

Litestar's render plugins load the UI's JavaScript and CSS from a CDN (jsdelivr, unpkg...), so without internet
access ``/schema`` is a blank page. Here the files of Swagger UI's distribution (npm ``swagger-ui-dist``, vendored
in ``swagger-ui/`` beside this module with its licence, see SOURCE.md there) are served under
``/schema/assets/<version>/`` with a year's cache lifetime (a new version is a new path), and the plugin is pointed
at them: the page needs nothing but the service. The documents stay where they were: ``/schema/openapi.json`` (and
``.yaml``); ``/schema`` and ``/schema/swagger`` are the page. Litestar's other pages (Redoc, RapiDoc, Elements),
which only work online, are not served.
"""

import json
from functools import cache
from importlib.resources import files

from litestar import Response, Router, get
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin

from services.shared.http import ApiError

_DIST = files("services.shared.openapi_ui").joinpath("swagger-ui")
SWAGGER_UI_VERSION: str = json.loads(_DIST.joinpath("package.json").read_text())["version"]

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
"""The files the page loads, with their media types: nothing else in the folder is served."""

CACHE_CONTROL = "public, max-age=31536000, immutable"


@cache
def _asset(name: str) -> bytes:
    return _DIST.joinpath(name).read_bytes()  # read on first request, kept: 2.3 MB, only where someone browses


async def serve_asset(name: str) -> Response[bytes]:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no asset {name[:80]!r}")
    return Response(content=_asset(name), media_type=media_type, headers={"Cache-Control": CACHE_CONTROL})


class LocalSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` and ``/schema/swagger``, taking its files from the service (see the module)."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/swagger"])

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)  # Swagger UI's OAuth2 redirect page
        base = f"{router.path.rstrip('/')}/assets/{SWAGGER_UI_VERSION}"
        router.register(get(f"/assets/{SWAGGER_UI_VERSION}/{{name:str}}", include_in_schema=False)(serve_asset))
        self.js_url = f"{base}/swagger-ui-bundle.js"
        self.standalone_preset_js_url = f"{base}/swagger-ui-standalone-preset.js"
        self.css_url = f"{base}/swagger-ui.css"
        # Litestar's default icon is on a CDN too.
        self.favicon = f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>"


def schema_pages() -> list[OpenAPIRenderPlugin]:
    """The ``render_plugins`` of a service's ``OpenAPIConfig``: the page, and the YAML document beside the JSON one
    (which Litestar adds by itself)."""
    return [LocalSwaggerUI(), YamlRenderPlugin()]
