"""``GET /widget.js`` and the demo pages: a list of comparisons, and one page per comparison like the site's.

The pages are plain HTML built from the catalogue (every value escaped); the Community figure on them is the
widget itself, so the demo exercises exactly what a site embeds.
"""

import gzip
import hashlib
from html import escape
from importlib.resources import files
from typing import Any

from litestar import Request, Response, get

from contracts.catalog import Comparison, Tool
from services.shared.http import ApiError

WIDGET_JS = files("services.votes.widget").joinpath("widget.js").read_bytes()
WIDGET_VERSION = hashlib.sha256(WIDGET_JS).hexdigest()[:12]
# Compressed once (a third of the size: its comments and word table compress well); mtime=0 keeps it reproducible.
WIDGET_JS_GZIP = gzip.compress(WIDGET_JS, compresslevel=9, mtime=0)
_WIDGET_ETAGS = {False: f'"{WIDGET_VERSION}"', True: f'"{WIDGET_VERSION}-gzip"'}
DEMO_INDEX_SIZE = 200
"""Comparisons the demo index lists (the first in id order): a page, not the whole of a large catalogue."""

_STYLE = """
:root{--bg:#f6f5f2;--fg:#1c1b19;--card:#fff;--muted:#6b6760;--soft:#4a4742;--rule:#eee;--link:#1f5fbf;
--ship:#1f7a4d;--skip:#9b2c2c;color-scheme:light}
:root[data-theme=dark]{--bg:#141311;--fg:#ecebe8;--card:#1f1e1b;--muted:#a8a49c;--soft:#c9c6bf;--rule:#34322e;
--link:#8ab4ff;--ship:#3fb27f;--skip:#e07070;color-scheme:dark}
@media (prefers-color-scheme:dark){:root[data-theme=auto]{--bg:#141311;--fg:#ecebe8;--card:#1f1e1b;--muted:#a8a49c;
--soft:#c9c6bf;--rule:#34322e;--link:#8ab4ff;--ship:#3fb27f;--skip:#e07070;color-scheme:dark}}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:var(--bg);color:var(--fg)}
main{max-width:960px;margin:0 auto;padding:2rem 1rem}
.eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:.75rem;color:var(--muted)}
h1{font-size:1.9rem;margin:.3rem 0}
.lede{color:var(--soft);max-width:60ch}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:1.2rem;margin:1.5rem 0}
.card,.trend{background:var(--card);border-radius:14px;padding:1.3rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.trend{margin:1.5rem 0}
.card h2{margin:.2rem 0;font-size:1.3rem}
.pitch{color:var(--soft);margin:.2rem 0 1rem}
.figures{display:grid;grid-template-columns:repeat(3,1fr);gap:.6rem;border-top:1px solid var(--rule);padding:1rem 0}
.figure .value,.figures [data-shipskip]::part(value){font-size:1.4rem;font-weight:650}
.figure .label,.figures [data-shipskip]::part(label){font-size:.75rem;color:var(--muted);text-transform:uppercase;
letter-spacing:.05em}
[data-shipskip]{--shipskip-text:var(--fg);--shipskip-muted:var(--muted);--shipskip-ship:var(--ship);
--shipskip-skip:var(--skip)}
.summary{font-size:.92rem;color:var(--soft)}
.quotes{display:grid;gap:.8rem}
blockquote{margin:0;background:var(--card);border-left:4px solid var(--ship);padding:.8rem 1rem;border-radius:6px}
blockquote.skip{border-left-color:var(--skip)}
blockquote cite{display:block;font-style:normal;font-size:.8rem;color:var(--muted);margin-top:.4rem}
a{color:var(--link)}
ul.list{list-style:none;padding:0}ul.list li{margin:.6rem 0;font-size:1.1rem}
footer.forget{margin-top:2rem;padding-top:1rem;border-top:1px solid var(--rule);max-width:60ch}
"""
THEMES = ("auto", "light", "dark")

# A data: icon, so that browsers do not ask for /favicon.ico (a 404 in every demo page's log otherwise).
_ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Ccircle cx='8' cy='8' r='7' fill='%231f7a4d'/%3E%3Cpath d='M4.5 8.5l2.2 2.2 4.8-5' stroke='white' "
    "stroke-width='2' fill='none'/%3E%3C/svg%3E"
)


def _page(title: str, body: str, theme: str = "auto") -> Response[bytes]:
    html = (
        f"<!doctype html><html lang=en data-theme={theme}><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f'<link rel=icon href="{_ICON}">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>{body}</main>"
        f'<script src="/widget.js?v={WIDGET_VERSION}" defer></script></body></html>'
    )
    # Litestar adds "; charset=utf-8" to a text/ media type itself.
    return Response(content=html.encode(), media_type="text/html", headers={"Cache-Control": "no-cache"})


def _panel_pct(tool: Tool) -> str:
    total = tool.panel.ship + tool.panel.skip
    return f"{round(100 * tool.panel.ship / total)}%" if total else "—"


def _widget(comparison: Comparison, tool: Tool, read_api: str, part: str, theme: str) -> str:
    return (
        f'<div data-shipskip data-part={part} data-comparison="{escape(comparison.id)}" data-tool="{escape(tool.id)}"'
        f' data-tool-name="{escape(tool.name)}" data-votes-api="" data-read-api="{escape(read_api)}"'
        f" data-theme={theme}></div>"
    )


def _forget(theme: str) -> str:
    # Once a page, as a site's footer would hold it: the link forgets the visitor, on every comparison.
    return (
        f'<footer class=forget><div data-shipskip data-part=forget data-votes-api="" data-theme={theme}></div></footer>'
    )


def _history(comparison: Comparison, read_api: str, theme: str) -> str:
    """Both tools' community share a day, as the widget's larger chart draws it."""
    return (
        f'<div data-shipskip data-part=history data-comparison="{escape(comparison.id)}" data-votes-api=""'
        f' data-read-api="{escape(read_api)}" data-theme={theme}></div>'
    )


def _card(comparison: Comparison, tool: Tool, read_api: str, theme: str) -> str:
    # As on the site: Panel ship, Community and Entry as three equal figures, the Community one live.
    return (
        f'<section class=card aria-labelledby="t-{escape(tool.id)}">'
        f"<div class=eyebrow>{escape(tool.category)}</div>"
        f'<h2 id="t-{escape(tool.id)}">{escape(tool.name)}</h2>'
        f"<p class=pitch>{escape(tool.pitch)}</p>"
        "<div class=figures>"
        f"<div class=figure><div class=value>{_panel_pct(tool)}</div><div class=label>Panel ship</div></div>"
        f"{_widget(comparison, tool, read_api, 'figure', theme)}"
        f"<div class=figure><div class=value>{escape(tool.entry)}</div><div class=label>Entry</div></div>"
        "</div>"
        f"{_widget(comparison, tool, read_api, 'vote', theme)}"
        f"<p class=summary>{escape(tool.summary)}</p></section>"
    )


def _theme(request: Request[Any, Any, Any]) -> str:
    """?theme=light|dark; by default the page follows the browser's colour scheme, and so do its widgets."""
    wanted = request.query_params.get("theme")
    return wanted if wanted in THEMES else "auto"


def _read_api(request: Request[Any, Any, Any]) -> str:
    """Where pages read figures from: configured, or the read API's port on the host the page came from."""
    configured: str | None = request.app.state.votes.settings.public_read_api
    if configured:
        return configured
    host = request.url.hostname or "127.0.0.1"
    return f"{request.url.scheme}://{host}:{request.app.state.votes.settings.read_port}"


@get("/widget.js", summary="The embeddable widget (plain JavaScript, cacheable, versioned)", include_in_schema=False)
async def widget_js(request: Request[Any, Any, Any]) -> Response[bytes]:
    compressed = _accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = _WIDGET_ETAGS[compressed]
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=300, stale-while-revalidate=86400",
        "Vary": "Accept-Encoding",
    }
    if request.query_params.get("v") == WIDGET_VERSION:
        headers["Cache-Control"] = "public, max-age=31536000, immutable"  # a versioned URL never changes
    if request.headers.get("if-none-match") == etag:
        return Response(content=b"", status_code=304, headers=headers)
    if compressed:
        headers["Content-Encoding"] = "gzip"
        return Response(content=WIDGET_JS_GZIP, media_type="text/javascript", headers=headers)
    return Response(content=WIDGET_JS, media_type="text/javascript", headers=headers)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding field takes gzip: named (or ``*``), without ``q=0``."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        name, _, value = params.strip().partition("=")
        if name.strip().lower() != "q":
            return True
        try:
            return float(value) > 0
        except ValueError:
            return False
    return False


@get("/", include_in_schema=False)
async def demo_index(request: Request[Any, Any, Any]) -> Response[bytes]:
    comparisons, _ = request.app.state.votes.catalog.page(None, DEMO_INDEX_SIZE)
    items = "".join(f'<li><a href="/compare/{escape(c.id)}">{escape(c.title)}</a></li>' for c, _ in comparisons)
    body = (
        "<div class=eyebrow>shipskip demo</div><h1>AI tool comparisons</h1>"
        "<p class=lede>Every page puts two tools side by side; the Community figure is live.</p>"
        f"<ul class=list>{items}</ul>{_forget(_theme(request))}"
    )
    return _page("shipskip demo", body, _theme(request))


@get("/compare/{comparison_id:str}", include_in_schema=False)
async def demo_comparison(request: Request[Any, Any, Any], comparison_id: str) -> Response[bytes]:
    found = request.app.state.votes.catalog.comparison(comparison_id)
    if found is None:
        raise ApiError(404, "unknown_comparison", f"no open comparison {comparison_id[:80]!r}")
    comparison, tools = found
    read_api = _read_api(request)
    theme = _theme(request)
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
        f"<div class=cards>{''.join(_card(comparison, tool, read_api, theme) for tool in tools)}</div>"
        "<section class=trend aria-labelledby=trend-title><h2 id=trend-title>Community over the last 30 days</h2>"
        f"{_history(comparison, read_api, theme)}</section>"
        f"<h2>Reviewer scorecard</h2><div class=quotes>{''.join(quotes)}</div>{_forget(theme)}"
    )
    return _page(comparison.title, body, theme)


WIDGET_ROUTES = [widget_js, demo_index, demo_comparison]
