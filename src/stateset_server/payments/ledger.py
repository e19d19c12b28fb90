"""The double-entry USDC ledger: every transaction's entries sum to zero.

Wallet balances are kept on their account rows and may never go negative; the check and the debit
are one conditional UPDATE, so concurrent payments from one wallet cannot overdraw it. Accounts are
updated in id order so two transactions never wait on each other's locks in opposite orders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stateset_server.core.ids import new_id
from stateset_server.storage import Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = [
    "Entry",
    "InsufficientFunds",
    "account_id",
    "account_ids",
    "balance",
    "committed_account_ids",
    "post",
    "totals",
    "transaction_hash",
]

SYSTEM_KINDS = ("merchant", "fees", "faucet")


class InsufficientFunds(Exception):
    def __init__(self, address: str, needed: int, available: int) -> None:
        super().__init__(f"wallet {address} has insufficient funds")
        self.address = address
        self.needed = needed
        self.available = available


@dataclass(frozen=True)
class Entry:
    account_id: str
    amount: int  # signed micro-USDC: negative leaves the account, positive arrives
    is_wallet: bool
    address: str


async def account_id(tx: Tx, principal: Principal, kind: str, address: str, now: int) -> str:
    """The account for an address (a system account's address is its kind), created on first use."""
    existing = await tx.fetchval(
        "SELECT id FROM ledger_accounts WHERE workspace_id = $1 AND mode = $2 AND address = $3",
        principal.workspace_id,
        principal.mode,
        address,
    )
    if existing is not None:
        return str(existing)
    created = new_id("acct")
    await tx.execute(
        "INSERT INTO ledger_accounts (id, workspace_id, mode, kind, address, balance, created_at)"
        " VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (workspace_id, mode, address) DO NOTHING",
        created,
        principal.workspace_id,
        principal.mode,
        kind,
        address,
        now,
    )
    # Another transaction may have created it meanwhile (PostgreSQL): read back whichever won.
    return str(
        await tx.fetchval(
            "SELECT id FROM ledger_accounts WHERE workspace_id = $1 AND mode = $2 AND address = $3",
            principal.workspace_id,
            principal.mode,
            address,
        )
    )


async def account_ids(tx: Tx, principal: Principal, addresses: list[str]) -> dict[str, str]:
    """The existing accounts of these addresses, by address (one statement; none are created)."""
    placeholders = ", ".join(f"${n}" for n in range(3, len(addresses) + 3))
    rows = await tx.fetch(
        "SELECT address, id FROM ledger_accounts"
        f" WHERE workspace_id = $1 AND mode = $2 AND address IN ({placeholders})",
        principal.workspace_id,
        principal.mode,
        *addresses,
    )
    return {str(row[0]): str(row[1]) for row in rows}


# Account ids by (workspace, mode, address), as read from committed data. An account is never
# deleted and its id never changes, so such an id stays right for good; ids seen inside a transaction
# that might still roll back are never put here.
_committed: dict[tuple[str, str, str], str] = {}
_MAX_COMMITTED = 100_000


async def committed_account_ids(db: Database, principal: Principal, addresses: list[str]) -> dict[str, str]:
    """The ids of the accounts these addresses already have (remembered per process after the first
    read), by address; an address without an account is left out."""
    scope = (principal.workspace_id, principal.mode)
    known = {a: _committed[(*scope, a)] for a in addresses if (*scope, a) in _committed}
    missing = [a for a in addresses if a not in known]
    if missing:
        found = await db.read(lambda tx: account_ids(tx, principal, missing), snapshot=False)
        if len(_committed) + len(found) > _MAX_COMMITTED:
            _committed.clear()
        _committed.update({(*scope, address): account for address, account in found.items()})
        known.update(found)
    return known


async def lock_wallets(tx: Tx, principal: Principal, addresses: list[str]) -> None:
    """Lock these wallets' accounts now, in one fixed order, for a transaction that will move money
    from several of them: two such transactions then queue instead of deadlocking."""
    if tx.dialect != "postgres" or not addresses:
        return  # SQLite has a single writer: nothing to order
    await tx.execute(
        "SELECT id FROM ledger_accounts WHERE workspace_id = $1 AND mode = $2 AND address = ANY($3::text[])"
        " ORDER BY id FOR UPDATE",
        principal.workspace_id,
        principal.mode,
        sorted(set(addresses)),
    )


def transaction_hash(transaction_id: str, kind: str, reference: str | None, entries: list[Entry]) -> str:
    """`0x` + the SHA-256 of the transaction's canonical form: its id, kind, reference and entries."""
    canonical = "|".join([transaction_id, kind, reference or "", *(f"{e.account_id}:{e.amount}" for e in entries)])
    return "0x" + hashlib.sha256(canonical.encode()).hexdigest()


_DEBIT = "UPDATE ledger_accounts SET balance = balance + $2 WHERE id = $1 AND balance + $2 >= 0 RETURNING balance"


async def post(
    tx: Tx,
    principal: Principal,
    *,
    kind: str,
    reference: str | None,
    entries: list[Entry],
    now: int,
    transaction_id: str | None = None,
    guarded: bool = False,
) -> str:
    """Write one balanced transaction; returns its hash (`0x` + 64 hex). Raises InsufficientFunds;
    `guarded` (a payment prepared ahead of its transaction): a wallet short of funds makes the
    write Stale instead (`Tx.guard`), and the command is then decided again."""
    if sum(e.amount for e in entries) != 0:
        raise ValueError("unbalanced ledger transaction")
    for entry in sorted(entries, key=lambda e: e.account_id):
        if not entry.is_wallet:
            continue
        if guarded:
            await tx.guard(_DEBIT, entry.account_id, entry.amount)
            continue
        remaining = await tx.fetchval(_DEBIT, entry.account_id, entry.amount)
        if remaining is None:
            available = await tx.fetchval("SELECT balance FROM ledger_accounts WHERE id = $1", entry.account_id)
            raise InsufficientFunds(entry.address, -entry.amount, int(available or 0))
    transaction_id = transaction_id or new_id("ltx")
    digest = transaction_hash(transaction_id, kind, reference, entries)
    await tx.execute(
        "INSERT INTO ledger_transactions (id, workspace_id, mode, kind, reference, hash, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        transaction_id,
        principal.workspace_id,
        principal.mode,
        kind,
        reference,
        digest,
        now,
    )
    await tx.executemany(
        "INSERT INTO ledger_entries (transaction_id, account_id, amount, created_at) VALUES ($1, $2, $3, $4)",
        [(transaction_id, e.account_id, e.amount, now) for e in entries],
    )
    return digest


async def balance(tx: Tx, principal: Principal, address: str) -> int:
    """A wallet's balance (0 for an address the ledger has never seen)."""
    value = await tx.fetchval(
        "SELECT balance FROM ledger_accounts WHERE workspace_id = $1 AND mode = $2 AND address = $3",
        principal.workspace_id,
        principal.mode,
        address,
    )
    return int(value or 0)


async def totals(tx: Tx, principal: Principal) -> dict[str, int]:
    """Each account's balance as the sum of its entries, by address (system accounts by kind)."""
    rows = await tx.fetch(
        "SELECT a.address, COALESCE(SUM(e.amount), 0) AS total FROM ledger_accounts a"
        " LEFT JOIN ledger_entries e ON e.account_id = a.id"
        " WHERE a.workspace_id = $1 AND a.mode = $2 GROUP BY a.address",
        principal.workspace_id,
        principal.mode,
    )
    return {row["address"]: int(row["total"]) for row in rows}
