"""``GET /widget.js`` and the demo pages: a list of comparisons, and one page per comparison like the site's.

The pages are plain HTML built from the catalogue (every value escaped); the Community figure on them is the
widget itself, so the demo exercises exactly what a site embeds.
"""

import hashlib
from html import escape
from importlib.resources import files
from typing import Any

from litestar import Request, Response, get

from contracts.catalog import Comparison, Tool
from services.shared.http import ApiError

WIDGET_JS = files("services.votes.widget").joinpath("widget.js").read_bytes()
WIDGET_VERSION = hashlib.sha256(WIDGET_JS).hexdigest()[:12]
_WIDGET_ETAG = f'"{WIDGET_VERSION}"'
DEMO_INDEX_SIZE = 200
"""Comparisons the demo index lists (the first in id order): a page, not the whole of a large catalogue."""

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f5f2;color:#1c1b19}
main{max-width:960px;margin:0 auto;padding:2rem 1rem}
.eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:.75rem;color:#6b6760}
h1{font-size:1.9rem;margin:.3rem 0}
.lede{color:#4a4742;max-width:60ch}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:1.2rem;margin:1.5rem 0}
.card{background:#fff;border-radius:14px;padding:1.3rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.card h2{margin:.2rem 0;font-size:1.3rem}
.pitch{color:#4a4742;margin:.2rem 0 1rem}
.figures{display:grid;grid-template-columns:repeat(3,1fr);gap:.6rem;border-top:1px solid #eee;padding-top:1rem}
.figure .value{font-size:1.4rem;font-weight:650}
.figure .label{font-size:.75rem;color:#6b6760;text-transform:uppercase;letter-spacing:.05em}
.community{grid-column:1/-1}
.summary{font-size:.92rem;color:#3a3833}
.quotes{display:grid;gap:.8rem}
blockquote{margin:0;background:#fff;border-left:4px solid #1f7a4d;padding:.8rem 1rem;border-radius:6px}
blockquote.skip{border-left-color:#9b2c2c}
blockquote cite{display:block;font-style:normal;font-size:.8rem;color:#6b6760;margin-top:.4rem}
a{color:#1f5fbf}
ul.list{list-style:none;padding:0}ul.list li{margin:.6rem 0;font-size:1.1rem}
"""


def _page(title: str, body: str) -> Response[bytes]:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>{body}</main>"
        f'<script src="/widget.js?v={WIDGET_VERSION}" defer></script></body></html>'
    )
    return Response(content=html.encode(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


def _panel_pct(tool: Tool) -> str:
    total = tool.panel.ship + tool.panel.skip
    return f"{round(100 * tool.panel.ship / total)}%" if total else "—"


def _card(comparison: Comparison, tool: Tool, read_api: str) -> str:
    return (
        f'<section class=card aria-labelledby="t-{escape(tool.id)}">'
        f"<div class=eyebrow>{escape(tool.category)}</div>"
        f'<h2 id="t-{escape(tool.id)}">{escape(tool.name)}</h2>'
        f"<p class=pitch>{escape(tool.pitch)}</p>"
        "<div class=figures>"
        f"<div class=figure><div class=value>{_panel_pct(tool)}</div><div class=label>Panel ship</div></div>"
        f"<div class=figure><div class=value>{escape(tool.entry)}</div><div class=label>Entry</div></div>"
        f"<div class=figure><div class=value>{tool.panel.ship}/{tool.panel.ship + tool.panel.skip}</div>"
        "<div class=label>Reviewers</div></div>"
        '<div class="figure community">'  # the widget says "Community: …" itself
        f'<div data-shipskip data-comparison="{escape(comparison.id)}" data-tool="{escape(tool.id)}"'
        f' data-votes-api="" data-read-api="{escape(read_api)}"></div></div>'
        "</div>"
        f"<p class=summary>{escape(tool.summary)}</p></section>"
    )


def _read_api(request: Request[Any, Any, Any]) -> str:
    """Where pages read figures from: configured, or the read API's port on the host the page came from."""
    configured: str | None = request.app.state.votes.settings.public_read_api
    if configured:
        return configured
    host = request.url.hostname or "127.0.0.1"
    return f"{request.url.scheme}://{host}:{request.app.state.votes.settings.read_port}"


@get("/widget.js", summary="The embeddable widget (plain JavaScript, cacheable, versioned)", include_in_schema=False)
async def widget_js(request: Request[Any, Any, Any]) -> Response[bytes]:
    headers = {"ETag": _WIDGET_ETAG, "Cache-Control": "public, max-age=300, stale-while-revalidate=86400"}
    if request.query_params.get("v") == WIDGET_VERSION:
        headers["Cache-Control"] = "public, max-age=31536000, immutable"  # a versioned URL never changes
    if request.headers.get("if-none-match") == _WIDGET_ETAG:
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=WIDGET_JS, media_type="text/javascript; charset=utf-8", headers=headers)


@get("/", include_in_schema=False)
async def demo_index(request: Request[Any, Any, Any]) -> Response[bytes]:
    comparisons, _ = request.app.state.votes.catalog.page(None, DEMO_INDEX_SIZE)
    items = "".join(f'<li><a href="/compare/{escape(c.id)}">{escape(c.title)}</a></li>' for c, _ in comparisons)
    body = (
        "<div class=eyebrow>shipskip demo</div><h1>AI tool comparisons</h1>"
        "<p class=lede>Every page puts two tools side by side; the Community figure is live.</p>"
        f"<ul class=list>{items}</ul>"
    )
    return _page("shipskip demo", body)


@get("/compare/{comparison_id:str}", include_in_schema=False)
async def demo_comparison(request: Request[Any, Any, Any], comparison_id: str) -> Response[bytes]:
    found = request.app.state.votes.catalog.comparison(comparison_id)
    if found is None:
        raise ApiError(404, "unknown_comparison", f"no open comparison {comparison_id[:80]!r}")
    comparison, tools = found
    read_api = _read_api(request)
    quotes = []
    for index in range(max(len(t.quotes) for t in tools)):
        for tool in tools:
            if index < len(tool.quotes):
                quote = tool.quotes[index]
                quotes.append(
                    f'<blockquote class="{quote.verdict}">{escape(quote.text)}'
                    f"<cite>On {escape(tool.name)} — {quote.verdict}</cite></blockquote>"
                )
    body = (
        '<div class=eyebrow><a href="/">AI tool comparison</a></div>'
        f"<h1>{escape(comparison.title)}</h1><p class=lede>{escape(comparison.lede)}</p>"
        f"<div class=cards>{''.join(_card(comparison, tool, read_api) for tool in tools)}</div>"
        f"<h2>Reviewer scorecard</h2><div class=quotes>{''.join(quotes)}</div>"
    )
    return _page(comparison.title, body)


WIDGET_ROUTES = [widget_js, demo_index, demo_comparison]
