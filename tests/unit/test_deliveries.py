"""The stream sequence, consumer sequence and pending count the projector and a replay cut from a JetStream
delivery's reply subject (services/shared/deliveries.py); tests/integration/test_pull.py checks real deliveries."""

import pytest

from services.shared.deliveries import delivery_sequences


def test_the_older_nine_token_form() -> None:
    assert delivery_sequences("$JS.ACK.VOTES.replay-1.1.4711.4700.1764680000000000000.289") == (4711, 4700, 289)


@pytest.mark.parametrize("tail", ["", ".Xy7"], ids=["without-token", "with-token"])
def test_the_newer_form_with_domain_and_account_hash(tail: str) -> None:
    reply = "$JS.ACK._.ACCHASH.VOTES.replay-1.1.4711.4700.1764680000000000000.0" + tail
    assert delivery_sequences(reply) == (4711, 4700, 0)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.def", "$JS.ACK.VOTES.c.1.x.2.3.4"])
def test_anything_else_is_refused(reply: str) -> None:
    with pytest.raises(ValueError, match=r"reply subject|invalid literal"):
        delivery_sequences(reply)
