"""Running the deployment as local processes: a project-local Postgres, the compose services."""

from weaver.deploy.postgres import LocalPostgres, PostgresNotInstalled, ensure_postgres_binaries

__all__ = ["LocalPostgres", "PostgresNotInstalled", "ensure_postgres_binaries"]
