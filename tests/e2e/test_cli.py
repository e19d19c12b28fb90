"""The `stateset-server` command itself, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.support import ServerProcess


def cli(*args: str, database_url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stateset_server", *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_migrate_is_idempotent(fresh_database: str) -> None:
    from stateset_server.storage.migrate import load_migrations

    versions = [m.version for m in load_migrations("sqlite")]
    assert f"applied migrations {versions}" in cli("migrate", database_url=fresh_database).stdout
    assert "up to date" in cli("migrate", database_url=fresh_database).stdout


def test_keys_lifecycle_through_the_cli_against_a_running_server(fresh_database: str) -> None:
    workspace = cli("workspaces", "create", "--name", "Acme", database_url=fresh_database).stdout.strip()
    assert workspace.startswith("ws_")
    assert workspace in cli("workspaces", "list", database_url=fresh_database).stdout

    secret = last_line(cli("keys", "create", "--workspace", workspace, database_url=fresh_database))
    live = last_line(cli("keys", "create", "--workspace", workspace, "--mode", "live", database_url=fresh_database))
    restricted = last_line(
        cli(
            "keys", "create", "--workspace", workspace, "--kind", "restricted",
            "--scope", "orders:read", "--scope", "events:read", database_url=fresh_database,
        )
    )  # fmt: skip
    publishable = last_line(
        cli("keys", "create", "--workspace", workspace, "--kind", "publishable", database_url=fresh_database)
    )
    assert secret.startswith("sk_test_") and live.startswith("sk_live_")
    assert restricted.startswith("rk_test_") and publishable.startswith("pk_test_")

    listing = cli("keys", "list", "--workspace", workspace, database_url=fresh_database).stdout
    assert len(listing.strip().splitlines()) == 4
    for key in (secret, live, restricted, publishable):
        assert key not in listing and key[-4:] in listing
    assert "events:read orders:read" in listing

    server = ServerProcess(fresh_database).start()
    try:
        url = f"{server.base_url}/v1/events"
        assert httpx.get(url, headers={"Authorization": f"Bearer {restricted}"}).status_code == 200
        key_id = next(line.split("\t")[0] for line in listing.splitlines() if restricted[-4:] in line)
        assert "revoked" in cli("keys", "revoke", key_id, database_url=fresh_database).stdout
        refused = httpx.get(url, headers={"Authorization": f"Bearer {restricted}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"
        assert cli("keys", "revoke", key_id, database_url=fresh_database, check=False).returncode == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "restricted"], "needs at least one scope"),
        (["--kind", "restricted", "--scope", "orders:delete"], "unknown scope 'orders:delete'"),
        (["--scope", "orders:read"], "only restricted keys take scopes"),
        (["--workspace", "ws_missing"], "no such workspace"),
    ],
)
def test_bad_key_requests_fail_with_a_message(fresh_database: str, args: list[str], message: str) -> None:
    cli("workspaces", "create", database_url=fresh_database)
    result = cli("keys", "create", *args, database_url=fresh_database, check=False)
    assert result.returncode == 2
    assert message in result.stderr
