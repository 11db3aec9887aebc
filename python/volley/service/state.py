"""What every request handler and background thread of one service instance shares."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from volley.service.auth import TokenCache
from volley.service.credentials import BrokerCredentials
from volley.service.gateway import BrokerGateway
from volley.service.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    sessions: sessionmaker
    gateway: BrokerGateway
    credentials: BrokerCredentials
    tokens: TokenCache
