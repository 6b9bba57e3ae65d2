"""The models one server serves behind its one endpoint: a `RerankService` each, on its own engine,
and which one a request's `model` names (docs/models.md). One model is the common case: the
default, picked when a request names none."""

from __future__ import annotations

from server.core.errors import ErrorKind, ServiceError
from server.rerank.serving import RerankService


class ServedModels:
    def __init__(self, services: list[RerankService]) -> None:
        self.default = services[0]
        self.by_name = {service.name: service for service in services}
        self.draining = False  # SIGTERM came: /ready is 503, responses close their connection (the server's)

    @property
    def services(self) -> list[RerankService]:
        return list(self.by_name.values())

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def pick(self, name: str | None) -> RerankService:
        """The model a request names (None: the default); an unknown name is a 404 listing the served ones."""
        if name is None:
            return self.default
        service = self.by_name.get(name)
        if service is None:
            served = ", ".join(repr(n) for n in self.by_name)
            raise ServiceError(ErrorKind.NOT_FOUND, f"model {name!r} is not served here; this server serves {served}")
        return service

    def pick_or_default(self, name: str | None) -> RerankService:
        """TEI's shape: a `model` that names a served one picks it; any other is ignored, as TEI does."""
        return self.by_name.get(name or "", self.default)

    def start_draining(self) -> None:
        """SIGTERM came: /ready turns 503 and every answer closes its connection; the models still score."""
        self.draining = True

    async def close(self) -> None:
        for service in self.by_name.values():
            await service.close()
