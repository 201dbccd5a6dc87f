"""How the NATS settings are read (services/shared/config.py ``NatsSettings``): one way to log in at most, a client
certificate with its key, files that exist. Each refusal is one line naming the variables."""

from pathlib import Path

import pytest

from services.shared.config import ConfigError, Env, NatsSettings


def settings(tmp_path: Path, **variables: str) -> NatsSettings:
    return NatsSettings.from_env(Env({"SHIPSKIP_NATS_URL": "tls://127.0.0.1:4443", **variables}, fallback={}))


def a_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("x")
    return str(path)


def test_every_file_is_taken_as_given(tmp_path: Path) -> None:
    files = {name: a_file(tmp_path, name) for name in ("user.creds", "ca.pem", "cert.pem", "key.pem")}
    read = settings(
        tmp_path,
        SHIPSKIP_NATS_CREDS=files["user.creds"],
        SHIPSKIP_NATS_CA_FILE=files["ca.pem"],
        SHIPSKIP_NATS_CERT_FILE=files["cert.pem"],
        SHIPSKIP_NATS_KEY_FILE=files["key.pem"],
    )
    assert (read.creds_file, read.ca_file, read.cert_file, read.key_file) == (
        files["user.creds"], files["ca.pem"], files["cert.pem"], files["key.pem"],
    )  # fmt: skip
    assert read.urls == ["tls://127.0.0.1:4443"]


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({"SHIPSKIP_NATS_CREDS": "user.creds", "SHIPSKIP_NATS_NKEY_SEED": "user.nk"}, "both set"),
        (
            {"SHIPSKIP_NATS_URL": "tls://me:secret@127.0.0.1:4443", "SHIPSKIP_NATS_CREDS": "user.creds"},
            "carries a user",
        ),
        ({"SHIPSKIP_NATS_KEY_FILE": "key.pem"}, "set both or neither"),
        ({"SHIPSKIP_NATS_CA_FILE": "missing.pem"}, "no such file"),
        ({"SHIPSKIP_NATS_URL": "wss://127.0.0.1:443"}, "must start with nats:// or tls://"),
    ],
)
def test_what_cannot_work_is_refused_naming_the_variable(tmp_path: Path, variables: dict[str, str], says: str) -> None:
    existing = {"user.creds", "user.nk", "key.pem"}
    given = {
        name: (a_file(tmp_path, value) if value in existing else str(tmp_path / value)) if name != "SHIPSKIP_NATS_URL"
        else value
        for name, value in variables.items()
    }  # fmt: skip
    with pytest.raises(ConfigError, match=says) as refused:
        settings(tmp_path, **given)
    assert "SHIPSKIP_NATS_" in str(refused.value)
