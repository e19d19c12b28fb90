"""Charging and refunding, inside the caller's transaction: an order's payment and its status change
commit together or not at all.

USDC moves on the double-entry ledger: payer wallet → merchant (net) and fee account. In test mode a
payment without a wallet comes from the sandbox wallet, which the faucet funds with exactly the
amount first (like a test card that always succeeds). Refunds reverse the payment proportionally,
fees included (fees are waived on refunds), back to the wallet that paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.money import format_amount
from stateset_server.payments import ledger, repository
from stateset_server.payments.cards import CardDeclined, authorize_card
from stateset_server.payments.fees import Fees, FeeSchedule, fees_for
from stateset_server.payments.model import Payment, Refund
from stateset_server.storage import Tx
from stateset_server.workspaces.keys import Principal

__all__ = [
    "SANDBOX_WALLET",
    "ChargeIds",
    "PaymentRequest",
    "PredictedCharge",
    "charge",
    "charge_accounts",
    "fund_wallet",
    "payment_failed",
    "predict_charge",
    "refund",
]

SANDBOX_WALLET = "sandbox"


@dataclass(frozen=True)
class PaymentRequest:
    method: str  # "usdc" | "card"
    amount: int | None  # None: whatever is due
    wallet_address: str | None = None  # normalized
    card_number: str | None = None
    card_token: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    simulate_failure: bool = False  # payment: {test_mode: "fail"}
    billing_address: dict[str, Any] | None = None


def payment_failed(reason: str, message: str, **details: Any) -> ApiError:
    return ApiError("PAYMENT_FAILED", message, {"reason": reason, **details})


@dataclass(frozen=True)
class ChargeIds:
    """The ids a charge will use, chosen ahead so that its outcome can be predicted (`predict_charge`)."""

    payment: str
    transaction: str

    @classmethod
    def new(cls) -> ChargeIds:
        return cls(new_id("pay"), new_id("ltx"))


Move = tuple[str, str, int]  # (account kind, address, signed amount)


def _entries(moves: list[Move], accounts: dict[str, str]) -> list[ledger.Entry]:
    """The ledger entries of `moves` (zero moves are left out), given each address's account id."""
    return [
        ledger.Entry(accounts[address], amount, kind == "wallet", address) for kind, address, amount in moves if amount
    ]


async def _post_usdc(
    tx: Tx,
    principal: Principal,
    *,
    kind: str,
    reference: str,
    moves: list[Move],
    now: int,
    transaction_id: str | None = None,
    known: dict[str, str] | None = None,
) -> str:
    """Post `moves`; `known`: committed account ids by address (`ledger.committed_account_ids`)."""
    known = known or {}
    accounts = {
        address: known.get(address) or await ledger.account_id(tx, principal, account_kind, address, now)
        for account_kind, address, amount in moves
        if amount
    }
    entries = _entries(moves, accounts)
    return await ledger.post(
        tx, principal, kind=kind, reference=reference, entries=entries, now=now, transaction_id=transaction_id
    )


def _payment_moves(payer: str, amount: int, fees_total: int) -> list[Move]:
    return [("wallet", payer, -amount), ("merchant", "merchant", amount - fees_total), ("fees", "fees", fees_total)]


def charge_accounts(request: PaymentRequest) -> list[str]:
    """The ledger addresses a charge for `request` moves money between."""
    return [request.wallet_address or SANDBOX_WALLET, "merchant", "fees"]


@dataclass(frozen=True)
class PredictedCharge:
    """A USDC charge told ahead of its transaction (`predict_charge`): the payment `charge` would
    record, and what `write` then needs to record it without deciding again."""

    payment: Payment
    entries: list[ledger.Entry]
    transaction_id: str
    billing_address: dict[str, Any] | None

    async def write(self, tx: Tx, principal: Principal) -> None:
        """The ledger transaction and the payment, as `charge` writes them; Stale (`Tx.guard`) when
        the wallet no longer holds enough, and the command is then decided again."""
        payment = self.payment
        await ledger.post(
            tx, principal, kind="payment", reference=payment.id, entries=self.entries, now=payment.created_at,
            transaction_id=self.transaction_id, guarded=True,
        )  # fmt: skip
        await repository.insert_payment(tx, principal, payment, self.billing_address)


def predict_charge(
    *,
    order_id: str,
    currency: str,
    amount: int,
    request: PaymentRequest,
    schedule: FeeSchedule,
    now: int,
    ids: ChargeIds,
    accounts: dict[str, str],
) -> PredictedCharge | None:
    """The charge `charge` will make with these ids when it succeeds, computed without the database:
    for a USDC payment from a named wallet whose accounts all exist (`accounts`, by address). None
    when it cannot be told ahead. Whether the wallet holds enough is not known here: the write
    checks it."""
    if request.simulate_failure or request.method != "usdc" or currency != "USDC" or request.wallet_address is None:
        return None
    fees = fees_for(request.method, amount, schedule)
    moves = _payment_moves(request.wallet_address, amount, fees.total)
    if any(amount and address not in accounts for _kind, address, amount in moves):
        return None
    entries = _entries(moves, accounts)
    payment = _payment(
        ids.payment, order_id, request, amount, currency, fees, now,
        wallet=request.wallet_address,
        transaction_hash=ledger.transaction_hash(ids.transaction, "payment", ids.payment, entries),
    )  # fmt: skip
    return PredictedCharge(payment, entries, ids.transaction, request.billing_address)


def _payment(
    payment_id: str,
    order_id: str,
    request: PaymentRequest,
    amount: int,
    currency: str,
    fees: Fees,
    now: int,
    *,
    wallet: str | None = None,
    transaction_hash: str | None = None,
    card_brand: str | None = None,
    card_last4: str | None = None,
    card_token: str | None = None,
) -> Payment:
    return Payment(
        id=payment_id,
        order_id=order_id,
        method=request.method,
        status="succeeded",
        amount=amount,
        amount_refunded=0,
        currency=currency,
        network_fee=fees.network,
        processing_fee=fees.processing,
        wallet_address=wallet,
        card_brand=card_brand,
        card_last4=card_last4,
        card_token=card_token,
        transaction_hash=transaction_hash,
        created_at=now,
    )


async def fund_wallet(tx: Tx, principal: Principal, address: str, amount: int, now: int) -> str:
    """Sandbox faucet: mint test USDC into a wallet (test mode only; callers check)."""
    return await _post_usdc(
        tx,
        principal,
        kind="faucet",
        reference=address,
        moves=[("faucet", "faucet", -amount), ("wallet", address, amount)],
        now=now,
    )


async def charge(
    tx: Tx,
    principal: Principal,
    *,
    order_id: str,
    currency: str,
    amount: int,
    request: PaymentRequest,
    schedule: FeeSchedule,
    now: int,
    ids: ChargeIds | None = None,
    accounts: dict[str, str] | None = None,
) -> Payment:
    if request.simulate_failure:
        raise payment_failed("test_mode_fail", "The payment failed (simulated by test_mode: fail).")
    ids = ids or ChargeIds.new()
    payment_id = ids.payment
    fees = fees_for(request.method, amount, schedule)
    wallet = card_brand = card_last4 = card_token = transaction_hash = None
    if request.method == "usdc":
        if currency != "USDC":
            raise ApiError.field(
                "payment_method.type",
                f"USDC payments settle USDC orders; this order is in {currency}",
                expected="a card payment, or an order in USDC",
                received="usdc",
            )
        wallet = request.wallet_address
        payer = wallet
        if payer is None:
            if principal.livemode:
                raise ApiError.field(
                    "payment_method.wallet_address",
                    "live USDC payments name the paying wallet",
                    expected="a stateset1… or 0x… address",
                    code="MISSING_REQUIRED_FIELD",
                )
            payer = SANDBOX_WALLET
            await fund_wallet(tx, principal, payer, amount, now)
        try:
            transaction_hash = await _post_usdc(
                tx,
                principal,
                kind="payment",
                reference=payment_id,
                moves=_payment_moves(payer, amount, fees.total),
                now=now,
                transaction_id=ids.transaction,
                known=accounts,
            )
        except ledger.InsufficientFunds as short:
            raise payment_failed(
                "insufficient_funds",
                f"Wallet {short.address} holds {format_amount(short.available, 'USDC')} USDC;"
                f" {format_amount(short.needed, 'USDC')} is needed.",
                wallet_address=short.address,
                available=format_amount(short.available, "USDC"),
                required=format_amount(short.needed, "USDC"),
            ) from None
    else:
        try:
            card = authorize_card(
                livemode=principal.livemode,
                number=request.card_number,
                token=request.card_token,
                brand=request.card_brand,
                last4=request.card_last4,
            )
        except CardDeclined as declined:
            raise payment_failed(declined.code, declined.message, decline_code=declined.code) from None
        card_brand, card_last4, card_token = card.brand, card.last4, card.token
    payment = _payment(
        payment_id, order_id, request, amount, currency, fees, now,
        wallet=wallet, transaction_hash=transaction_hash,
        card_brand=card_brand, card_last4=card_last4, card_token=card_token,
    )  # fmt: skip
    await repository.insert_payment(tx, principal, payment, request.billing_address)
    return payment


async def refund(
    tx: Tx, principal: Principal, *, payment: Payment, amount: int, reason: str | None, now: int
) -> Refund:
    """Return `amount` of one payment to where it came from."""
    assert 0 < amount <= payment.refundable
    refund_id = new_id("re")
    transaction_hash = None
    if payment.method == "usdc":
        # Computed on the cumulative refund so that refunding everything, in any number of parts,
        # returns exactly all the fees.
        fees = payment.network_fee + payment.processing_fee
        done = payment.amount_refunded
        fees_back = fees * (done + amount) // payment.amount - fees * done // payment.amount
        transaction_hash = await _post_usdc(
            tx,
            principal,
            kind="refund",
            reference=refund_id,
            moves=[
                ("merchant", "merchant", -(amount - fees_back)),
                ("fees", "fees", -fees_back),
                ("wallet", payment.wallet_address or SANDBOX_WALLET, amount),
            ],
            now=now,
        )
    result = Refund(refund_id, payment.order_id, payment.id, amount, reason, transaction_hash, now)
    await repository.insert_refund(tx, principal, result)
    await repository.add_refunded(tx, payment.id, amount)
    return result
