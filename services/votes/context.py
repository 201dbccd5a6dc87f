"""What the votes handlers share, opened in the app's lifespan and kept on ``app.state.votes``."""

from dataclasses import dataclass, field

from nats.aio.client import Client as NATS

from services.shared.catalog_view import CatalogView
from services.shared.client_address import ClientAddresses
from services.votes.admission import Gate
from services.votes.body_deadline import BODY_TIMEOUT_S, BodyDeadlines
from services.votes.day_keys import SharedDayKeys
from services.votes.identity import Hasher, VoterTokens
from services.votes.publisher import VotePublisher
from services.votes.redis_link import RedisLink
from services.votes.settings import VotesSettings


@dataclass
class VotesContext:
    settings: VotesSettings
    nc: NATS
    catalog: CatalogView
    publisher: VotePublisher
    tokens: VoterTokens
    hasher: Hasher
    redis: RedisLink
    gate: Gate
    day_keys: SharedDayKeys
    addresses: ClientAddresses
    body_deadlines: BodyDeadlines = field(default_factory=lambda: BodyDeadlines(BODY_TIMEOUT_S))
