"""The coordinator service: HTTP API, database, auth, market scheduler, agent client."""

__all__: list[str] = []
