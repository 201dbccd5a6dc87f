"""The Grafana dashboard (infra/deploy/grafana/shipskip.json) and the Prometheus alert rules
(infra/deploy/prometheus/alerts.yaml) ask only for what the services export.

A real stack gets votes (accepted, unchanged, refused, rate-limited), reads, a live stream and a dead letter, so that
every series exists; then the three real ``/metrics`` (the ops ports) are scraped and every metric name and label
the dashboard's queries and the rules' expressions use must be in those scrapes. The names are read from the PromQL
text: strings and durations are dropped first, then an identifier followed by ``(`` is a function or aggregation,
the lists after ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` are labels, and every other
identifier (bare, or before ``{`` or ``[``) that is not a keyword is a metric.

The structure of both files is checked too (an importable dashboard with its data source as a variable; groups,
rules, ``for``, labels, annotations, and a runbook_url into an entry of docs/operations.md), and, where ``promtool``
is installed (``make promtool``: Debian's prometheus package), the rules and the dashboard's queries parse, the
rules' own tests pass (infra/deploy/prometheus/alerts.test.yaml) and prometheus.yaml is a valid configuration.
"""

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.stack.servers import ServerAddresses
from tests.integration.metrics_text import Scrape, scrape
from tests.integration.test_observability import open_stream
from tests.support import Pipeline, new_voter, publish_raw, running_pipeline, send_vote, wait_until
from tests.unit.test_docs import FENCE, anchors, slug

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "infra" / "deploy" / "grafana" / "shipskip.json"
PROMETHEUS = ROOT / "infra" / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK_BASE = "https://git.example.com/shipskip/shipskip/blob/main/docs/operations.md#"

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"

# -- reading PromQL -------------------------------------------------------------------------------------------------

KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "atan2", "start", "end"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def promql_parts(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub("[]", text)  # durations (5m) and Grafana's $__rate_interval
    labels: set[str] = set()
    for _, names in _LABEL_LIST.findall(text):
        labels |= {name.strip() for name in names.split(",") if name.strip()}
    text = _LABEL_LIST.sub(" ", text)
    for matchers in _MATCHERS.findall(text):
        labels |= {m.group(1) for m in re.finditer(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers)}
    text = _MATCHERS.sub("{}", text)
    metrics = {name for name, call in _IDENTIFIER.findall(text) if not call and name.lower() not in KEYWORDS}
    return metrics, labels


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route!~"/x|/y"}[$__rate_interval])))',
            {"a_bucket"},
            {"le", "route"},
        ),
        ("sum(rate(b_total[5m] offset 1h)) / sum(c)", {"b_total", "c"}, set()),
        (
            'x * on (job, instance) group_left (service) info{service="read"}',
            {"x", "info"},
            {"job", "instance", "service"},
        ),
        ("absent(up_thing) or vector(1) > bool 2e3", {"up_thing"}, set()),
        ('max without (pid) (g{route="/v1/comparisons/{comparison_id}/votes"}) == 0', {"g"}, {"pid", "route"}),
        ("sum by(a,b)(rate(m[1m]))", {"m"}, {"a", "b"}),
    ],
)
def test_the_promql_reader(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert promql_parts(expr) == (metrics, labels)


# -- the files ------------------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' nested panels included."""
    queries = []
    for panel in dashboard()["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                queries.append((inner["title"], target["expr"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_dashboard_is_importable_with_its_data_source_as_a_variable() -> None:
    board = dashboard()
    assert board["title"] == "shipskip"
    assert board["uid"] == "shipskip"
    assert isinstance(board["schemaVersion"], int)
    variables = board["templating"]["list"]
    (source,) = [v for v in variables if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        taken = {(x, y) for x in xs for y in ys}
        assert not taken & cells, f"{panel['title']} overlaps another panel"
        cells |= taken
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "state-timeline", "gauge", "table"}, panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["refId"]
            assert target["expr"].strip()
    titles = " | ".join(panel["title"] for panel in board["panels"]).lower()
    for wanted in ("accepted", "refused", "rate-limit", "publish latency", "lag (events)", "lag (seconds)",
                   "batch size", "fold time", "dead letters", "read requests", "read p99", "live streams",
                   "readiness"):  # fmt: skip
        assert wanted in titles, f"no panel about {wanted}"


def test_every_alert_has_its_shape_and_a_runbook_in_the_troubleshooting_section() -> None:
    loaded = yaml.safe_load(ALERTS.read_text())
    assert set(loaded) == {"groups"}
    for group in loaded["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert group["name"]
        assert group["rules"]
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    section = FENCE.sub("", OPERATIONS.read_text()).split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    in_troubleshooting = {slug(line.lstrip("#")) for line in section.splitlines() if line.startswith("### ")}
    assert in_troubleshooting <= anchors(OPERATIONS)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert isinstance(rule["expr"], str)
        assert rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), url
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor in in_troubleshooting, f"{rule['alert']}: no #{anchor} in docs/operations.md's troubleshooting"
    expressions = " ".join(rule["expr"] for rule in rules)
    for metric in ("shipskip_projector_lag_seconds", "shipskip_projector_dead_letters_total",
                   "shipskip_readiness", "shipskip_sse_clients_limit"):  # fmt: skip
        assert metric in expressions, f"no alert on {metric}"
    assert 'status=~"5.."' in expressions


# -- promtool -------------------------------------------------------------------------------------------------------


def promtool() -> str:
    beside = Path(sys.executable).parent / "promtool"
    found = str(beside) if beside.exists() else shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (make promtool: Debian's prometheus package)")
    return found


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules_and_their_tests_pass() -> None:
    checked = run_promtool("check", "rules", "alerts.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_promtool("test", "rules", "alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Each alert is tested firing at least once.
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yaml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_promtool_accepts_the_prometheus_configuration() -> None:
    checked = run_promtool("check", "config", "prometheus.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced by durations, each query is checked as a recording rule would be."""
    rules = []
    for index, (_, expr) in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"shipskip:dashboard_query_{index}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run_promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- against the real services --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The stack with rate limits on, a voter's limit of 3 votes, so that a 429 can be had."""
    limits = {
        "SHIPSKIP_RATE_LIMITS": "on",
        "SHIPSKIP_TRUSTED_PROXIES": "127.0.0.1",
        "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "3/1h,3",
    }
    with running_pipeline(servers, tmp_path_factory.mktemp("dashboard"), **limits) as running:
        yield running


@pytest.fixture(scope="module")
def scrapes(pipeline: Pipeline, servers: ServerAddresses) -> list[Scrape]:
    """Every process scraped after votes, refusals, a rate limit, reads, a live stream and a dead letter."""
    votes, read = pipeline.votes_url, pipeline.read_url
    with httpx.Client(timeout=10) as client:
        token = new_voter(client, votes, "198.51.100.7")
        assert send_vote(client, votes, token, "ship", LLAMA, TOOL).status_code == 202
        assert send_vote(client, votes, token, "ship", LLAMA, TOOL).status_code == 200
        assert send_vote(client, votes, token, "ship", LLAMA, "no-such-tool").status_code == 404
        statuses = [send_vote(client, votes, token, v, LLAMA, TOOL).status_code for v in ("skip", "ship", "skip")]
        assert 429 in statuses, statuses
        for path in ("/v1/comparisons", f"/v1/comparisons/{LLAMA}/community", f"/v1/community?comparison_id={LLAMA}"):
            assert client.get(read + path).status_code == 200
    asyncio.run(publish_raw(servers, [(f"votes.v1.{LLAMA}", b"not an event")]))
    wait_until(lambda: scrape(pipeline.projector_url).value("shipskip_projector_dead_letters_total") >= 1, timeout=30)
    stream = open_stream(read, f"/v1/comparisons/{LLAMA}/community/stream")
    try:
        wait_until(lambda: scrape(pipeline.read_ops_url).value("shipskip_sse_clients") == 1, timeout=20)
        return [scrape(url) for url in (pipeline.votes_ops_url, pipeline.read_ops_url, pipeline.projector_url)]
    finally:
        stream.close()


def exported(scrapes: list[Scrape]) -> dict[str, set[str]]:
    """Every sample name scraped (``_total``, ``_bucket``, ``_sum``, ``_count`` as exposed), with its labels."""
    found: dict[str, set[str]] = {}
    for scraped in scrapes:
        for name, labels, _ in scraped.samples:
            found.setdefault(name, set()).update(labels)
    return found


def uses() -> list[tuple[str, str]]:
    return [(f"panel {title!r}", expr) for title, expr in dashboard_queries()] + [
        (f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()
    ]


def test_every_metric_and_label_the_dashboard_and_alerts_use_is_exported(scrapes: list[Scrape]) -> None:
    names = exported(scrapes)
    missing: list[str] = []
    used: set[str] = set()
    for where, expr in uses():
        metrics, labels = promql_parts(expr)
        assert metrics, f"{where}: no metric found in {expr!r}"
        used |= metrics
        missing += [f"{where}: metric {metric}" for metric in sorted(metrics - set(names))]
        # A label used must be one of the series named there (job and instance: the scraper's own).
        known = {"job", "instance"}.union(*(names.get(metric, set()) for metric in metrics))
        missing += [f"{where}: label {label}" for label in sorted(labels - known)]
    assert not missing, "not exported by the services:\n" + "\n".join(missing)
    # The services the dashboard's joins name are those the scrapes carry.
    services = {labels["service"] for s in scrapes for name, labels, _ in s.samples if name == "shipskip_build_info"}
    assert services == {"votes", "read", "projector"}
    for _, expr in uses():
        for service in re.findall(r'service="(\w+)"', expr):
            assert service in services, expr
    # What the dashboard is for: each of these is on it.
    for metric in ("shipskip_votes_accepted_total", "shipskip_votes_unchanged_total", "shipskip_votes_refused_total",
                   "shipskip_rate_limit_hits_total", "shipskip_publish_seconds_bucket",
                   "shipskip_projector_lag_events", "shipskip_projector_lag_seconds",
                   "shipskip_projector_batch_size_bucket", "shipskip_projector_fold_seconds_bucket",
                   "shipskip_projector_dead_letters_total", "shipskip_http_requests_total",
                   "shipskip_http_request_duration_seconds_bucket", "shipskip_sse_clients",
                   "shipskip_readiness"):  # fmt: skip
        assert metric in used, f"nothing shows {metric}"


def test_the_series_exist_for_what_was_done(scrapes: list[Scrape]) -> None:
    """The drive above produced the series the panels plot (else the check above would only see empty families)."""
    votes, read, projector = scrapes
    assert votes.value("shipskip_votes_accepted_total", action="cast") >= 1
    assert votes.value("shipskip_votes_unchanged_total", action="cast") >= 1
    assert votes.value("shipskip_votes_refused_total", reason="unknown_tool") >= 1
    assert votes.value("shipskip_rate_limit_hits_total", limit="voter") >= 1
    assert read.value("shipskip_sse_clients") == 1
    assert read.value("shipskip_sse_clients_limit") >= 1
    assert projector.value("shipskip_projector_dead_letters_total") >= 1
    assert projector.has("shipskip_projector_lag_seconds", partition="tally")
