"""docs/operations.md's Configuration table lists every variable the code reads, each with its default, and nothing
else.

The code's variables are found two ways: every ``SHIPSKIP_*``/``GRANIAN_*`` name quoted in the services' and the
stack's source, and every name the settings objects actually ask ``Env`` for while being built (so a name put
together at run time cannot slip past the grep).
"""

import importlib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec
import pytest

from services.shared.config import Env

ROOT = Path(__file__).parents[2]
SOURCE_DIRS = ("services", "infra", "contracts")
NAME = re.compile(r"\b(?:SHIPSKIP|GRANIAN)_[A-Z0-9_]*[A-Z0-9]\b")
QUOTED_NAME = re.compile(r"""["'](?:f?)((?:SHIPSKIP|GRANIAN)_[A-Z0-9_]*[A-Z0-9])\b""")

# What a complete, valid environment holds for the settings to build without error.
VALID = {
    "SHIPSKIP_NATS_URL": "nats://127.0.0.1:1",
    "SHIPSKIP_DATABASE_URL": "postgresql://shipskip@127.0.0.1:1/shipskip",
    "SHIPSKIP_REDIS_URL": "redis://127.0.0.1:1/0",
    "SHIPSKIP_TOKEN_KEYS": "docs-test-signing-key-0123456789",
    "SHIPSKIP_HASH_KEY": "docs-test-hash-key-0123456789",
    "SHIPSKIP_ADMIN_TOKEN": "docs-test-admin-token-0123456789",
}


OPERATIONS = ROOT / "docs" / "operations.md"


def configuration_table(page: str) -> dict[str, str]:
    """Each variable named in the first cell of a row of the Configuration section's tables, with its default."""
    section = page.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= {"-", ":"}:
            continue
        for name in NAME.findall(cells[0]):
            rows[name] = cells[1]
    return rows


def quoted_in_source() -> dict[str, list[str]]:
    """Every variable name in a string literal of the shipped code, with where."""
    found: dict[str, list[str]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for name in QUOTED_NAME.findall(line):
                    found.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{number}")
    return found


class RecordingEnv(Env):
    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ, fallback={})
        self.asked: set[str] = set()

    def raw(self, name: str) -> str | None:
        self.asked.add(name)
        return super().raw(name)


def settings_classes() -> list[type]:
    """Every class with a ``from_env`` in the modules that hold settings."""
    classes: list[type] = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        if "settings" not in path.stem and path.stem != "config":
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for _, value in inspect.getmembers(module, inspect.isclass):
            if value.__module__ == module.__name__ and issubclass(value, msgspec.Struct) and hasattr(value, "from_env"):
                classes.append(value)
    return classes


def asked_by_settings() -> set[str]:
    env = RecordingEnv(VALID)
    for cls in settings_classes():
        cls.from_env(env)  # type: ignore[attr-defined]
    return env.asked


def test_every_settings_class_is_found() -> None:
    names = {cls.__name__ for cls in settings_classes()}
    assert {"ServerSettings", "VotesSettings", "TallySettings", "LiveSettings"} <= names


def test_every_variable_the_code_reads_is_in_the_table_with_its_default() -> None:
    table = configuration_table(OPERATIONS.read_text())
    in_code = quoted_in_source()
    missing = {name: where for name, where in in_code.items() if name not in table}
    assert not missing, f"not in docs/operations.md's Configuration table: {missing}"
    no_default = [name for name, default in table.items() if not default]
    assert not no_default, f"no default given in docs/operations.md for {no_default}"


def test_the_settings_read_no_variable_the_source_does_not_name() -> None:
    asked = asked_by_settings()
    assert asked, "the settings read nothing?"
    assert asked <= set(quoted_in_source()), asked - set(quoted_in_source())


def test_the_table_lists_no_variable_the_code_does_not_read() -> None:
    table = configuration_table(OPERATIONS.read_text())
    stale = sorted(set(table) - set(quoted_in_source()))
    assert not stale, f"docs/operations.md lists variables no code reads: {stale}"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("| `SHIPSKIP_A`, `SHIPSKIP_B` | 1 | x |", {"SHIPSKIP_A": "1", "SHIPSKIP_B": "1"}),
        ("| `SHIPSKIP_C` / `GRANIAN_D` | none | y |", {"SHIPSKIP_C": "none", "GRANIAN_D": "none"}),
        ("|---|---|---|", {}),
        ("not a row `SHIPSKIP_E`", {}),
    ],
)
def test_the_table_reader(row: str, expected: dict[str, str]) -> None:
    table = f"| variable | default | meaning |\n|---|---|---|\n{row}\n"
    page = f"# x\n\n## Configuration\n\n{table}\n## Next\n| `SHIPSKIP_Z` | 1 | z |\n"
    assert configuration_table(page) == expected
