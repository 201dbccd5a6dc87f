"""NATS logins made for a test: an nkey user, and a .creds file of a user of an account of an operator (the JWTs
nats-server reads in operator mode). The certificates come from tests/tls_certs.py.

The JWTs are what the ``nsc`` tool writes (nats-io/jwt v2): ``base64url(header).base64url(claims)``, signed with the
issuer's nkey (ed25519).
"""

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys


def new_nkey(prefix: int) -> Any:
    """A new nkey pair (``nkeys.PREFIX_BYTE_USER``, ``_ACCOUNT``, ``_OPERATOR``)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(pair: Any) -> str:
    return str(pair.public_key.decode())


def seed(pair: Any) -> str:
    return str(pair.seed.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A JWT of the nats-io/jwt v2 kind, signed by ``issuer``."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": public_key(issuer), "name": name, "sub": subject}
    claims["nats"] = {**nats, "version": 2}
    digest = hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()[:32]
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


@dataclass(frozen=True)
class OperatorMode:
    """An operator, one account (JetStream on) and one user of it: the server's configuration and the user's .creds."""

    config: str
    creds: str


def operator_mode() -> OperatorMode:
    operator = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_nkey(nkeys.PREFIX_BYTE_USER)
    unlimited = {key: -1 for key in ("subs", "data", "payload", "imports", "exports", "conn", "leaf")}
    jetstream = {key: -1 for key in ("mem_storage", "disk_storage", "streams", "consumer")}
    operator_jwt = jwt(operator, public_key(operator), "shipskip-test", {"type": "operator"})
    account_jwt = jwt(
        operator,
        public_key(account),
        "shipskip",
        {"type": "account", "limits": {**unlimited, **jetstream, "wildcards": True}},
    )
    user_jwt = jwt(
        account,
        public_key(user),
        "shipskip-votes",
        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    )
    system = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream in operator mode needs a system account
    system_jwt = jwt(operator, public_key(system), "SYS", {"type": "account", "limits": unlimited})
    preload = ", ".join(f"{public_key(a)}: {json.dumps(j)}" for a, j in ((account, account_jwt), (system, system_jwt)))
    config = (
        f"operator: {json.dumps(operator_jwt)}\n"
        f"system_account: {public_key(system)}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {preload} }}\n"
    )
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed(user)}\n------END USER NKEY SEED------\n"
    )
    return OperatorMode(config, creds)
