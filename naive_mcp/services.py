"""What a tool handler may use: settings, the upstream client, the model catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from naive_mcp.catalog import ModelCatalog
from naive_mcp.client import NaiveClient
from naive_mcp.redaction import Redactor
from naive_mcp.settings import Settings
from naive_mcp.tenancy import Tenancy


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    client: NaiveClient
    catalog: ModelCatalog
    redact: Redactor

    @classmethod
    def create(cls, settings: Settings, http: httpx2.AsyncClient) -> Services:
        client = NaiveClient(settings, http)
        return cls(
            settings=settings,
            client=client,
            catalog=ModelCatalog(client, settings.models_cache_ttl),
            redact=Redactor(settings.secrets()),
        )

    def tenancy(self, user_id: str | None, project_id: str | None) -> Tenancy:
        """The call's tenant: its own ids, else the server's defaults."""
        return Tenancy(
            user_id=user_id or self.settings.default_user_id,
            project_id=project_id or self.settings.default_project_id,
        )
