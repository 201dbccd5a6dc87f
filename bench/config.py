"""The harness's knobs, read from the environment (``BENCH_*``); ``BENCH_QUICK=1`` shrinks everything."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = False
    """One run of each benchmark, a few seconds each: to check that the harness works, not to measure."""
    runs: int = 3
    """Runs of each repeated benchmark (medians, min and max are over these)."""
    duration_s: float = 10.0
    """Length of one HTTP load run."""
    warmup_s: float = 2.0
    connections: int = 32
    tokens: int = 100_000
    """Voter tokens in the ring the vote load cycles through."""
    events: int = 1_000_000
    """Events published into a fresh VOTES stream for the replay benchmarks (read-back, catch-up, rebuild)."""
    replay_runs: int = 2
    publish_messages: int = 100_000
    """Messages per run of the raw nats-py publish baseline."""
    publish_in_flight: int = 256
    soak_votes: int = 1_000_000
    """Votes of the memory run (it stops after ``soak_max_s`` all the same)."""
    soak_max_s: float = 300.0
    freshness_s: float = 20.0
    freshness_rate: float = 2000.0
    soak_s: float = 600.0
    """Length of the soak (``soak``): steady mixed voting and reading with many open SSE clients."""
    soak_vote_rate: float = 300.0
    """Votes per second of the soak (casts, changes, retractions, repeats), paced, not flat out."""
    soak_read_rate: float = 200.0
    """GETs of community figures per second during the soak."""
    soak_sse_clients: int = 500
    """Live-figure streams held open for the whole soak (in a process of their own)."""
    soak_voter_tokens: int = 5_000
    """Voters of the soak: few enough that most of them come back to change or retract."""
    soak_comparisons: int = 6
    """Comparisons added to the catalogue for the soak; nothing else votes on them."""
    scale_tools: int = 10_000
    """``catalog.scale``: tools of the generated catalogue (each with a summary and two quotes)."""
    scale_comparisons: int = 50_000
    """``catalog.scale``: comparisons of the generated catalogue, the demo's included."""
    scale_sse_comparisons: int = 500
    """``catalog.scale``: the comparisons votes and SSE clients go to; the rest have no traffic."""
    scale_sse_clients: int = 1_000
    scale_vote_rate: float = 300.0
    """``catalog.scale``: votes per second of its SSE run, paced."""
    scale_run_s: float = 20.0
    drain_timeout_s: float = 120.0
    """How long to wait for the projector to catch up after a load run before going on."""
    generator: str = "auto"
    """auto (wrk if installed, else python), wrk or python."""
    wrk_threads: int = 1
    only: tuple[str, ...] = ()
    """Run only the benchmarks whose names start with one of these (BENCH_ONLY=ingest,read)."""
    results_dir: Path = field(default=RESULTS_DIR)
    profile: bool = False
    """Record a py-spy profile of a service during one ingest run (BENCH_PROFILE=1)."""
    profile_service: str = "votes"
    """Which service BENCH_PROFILE records: votes, projector or read (BENCH_PROFILE_SERVICE=projector)."""
    nats_sync: str = ""
    """JetStream's ``sync_interval`` for the embedded nats-server (BENCH_NATS_SYNC=always: every write is synced to
    disk before it is acknowledged; or a duration such as 1s); empty: nats-server's own default, 2 minutes."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "BenchConfig":
        env = os.environ if environ is None else environ
        quick = env.get("BENCH_QUICK", "") not in ("", "0", "off", "false", "no")
        config = QUICK if quick else cls()
        changes: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("BENCH_" + f.name.upper())
            if raw is None or raw == "" or f.name == "quick":
                continue
            current = getattr(config, f.name)
            if isinstance(current, bool):
                changes[f.name] = raw.lower() not in ("0", "off", "false", "no")
            elif isinstance(current, int):
                changes[f.name] = int(float(raw))
            elif isinstance(current, float):
                changes[f.name] = float(raw)
            elif isinstance(current, tuple):
                changes[f.name] = tuple(item.strip() for item in raw.split(",") if item.strip())
            elif isinstance(current, Path):
                changes[f.name] = Path(raw)
            else:
                changes[f.name] = raw
        return replace(config, **changes)  # type: ignore[arg-type]

    def runs_of(self, full_runs: int) -> int:
        return 1 if self.quick else full_runs


QUICK = BenchConfig(
    quick=True,
    runs=1,
    duration_s=3.0,
    warmup_s=0.5,
    tokens=2_000,
    events=20_000,
    replay_runs=1,
    publish_messages=10_000,
    soak_votes=20_000,
    soak_max_s=10.0,
    freshness_s=4.0,
    soak_s=10.0,
    soak_sse_clients=50,
    soak_voter_tokens=500,
    scale_tools=300,
    scale_comparisons=2_000,
    scale_sse_comparisons=25,
    scale_sse_clients=50,
    scale_vote_rate=100.0,
    scale_run_s=3.0,
    drain_timeout_s=30.0,
)
