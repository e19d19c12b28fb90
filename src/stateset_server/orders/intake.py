"""From a validated request to a priced domain order — pure rules, no I/O.

msgspec already checked types and lengths; this adds the rules that span fields (one price per item,
one customer identity) and the money rules (currency precision, exact totals).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec

from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.metadata import check_metadata
from stateset_server.core.money import MAX_AMOUNT_MICRO, normalize_currency, parse_amount
from stateset_server.inventory.stock import insufficient
from stateset_server.orders.model import LineItem, Order
from stateset_server.orders.pricing import Pricing, price_order
from stateset_server.orders.schemas import AddressIn, CreateOrderIn, PayIn, PaymentMethodIn
from stateset_server.orders.status import OrderStatus
from stateset_server.payments.addresses import InvalidAddress, normalize_wallet_address
from stateset_server.payments.service import PaymentRequest
from stateset_server.products.catalog import CatalogEntry

__all__ = ["new_order", "payment_request"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str, field: str) -> str:
    cleaned = value.strip()
    if len(cleaned) > 254 or not _EMAIL.match(cleaned):
        raise ApiError.field(field, "Invalid email format", expected="valid email address", received=value)
    return cleaned


def address_dict(address: AddressIn | str | None) -> dict[str, Any] | None:
    if address is None:
        return None
    if isinstance(address, str):
        return {"formatted": address}
    out = msgspec.to_builtins(address)
    if "country" in out:
        out["country"] = out["country"].upper()
    return out


def _customer(body: CreateOrderIn) -> tuple[str | None, str | None]:
    customer_id, email = body.customer_id, body.customer_email
    if body.customer is not None:
        for field, top, nested in (
            ("customer.id", customer_id, body.customer.id),
            ("customer.email", email, body.customer.email),
        ):
            if top is not None and nested is not None and top != nested:
                raise ApiError.field(
                    field,
                    f"conflicts with {field.replace('.', '_')}",
                    expected=f"the same value as {field.replace('.', '_')}, or only one of them",
                    received=nested,
                )
        customer_id = customer_id or body.customer.id
        email = email or body.customer.email
    if email is not None:
        email = _email(email, "customer_email" if body.customer_email is not None else "customer.email")
    return customer_id, email


def new_order(
    body: CreateOrderIn,
    *,
    workspace_id: str,
    mode: str,
    pricing: Pricing,
    now: int,
    catalog: dict[str, CatalogEntry] | None = None,
) -> Order:
    """A CREATED order with exact totals; `order_number` is assigned when it is stored.

    An item without a price takes its product's price (same currency); an unknown SKU needs a price.
    """
    currency = normalize_currency(body.currency)
    catalog = catalog or {}
    items = []
    for index, item in enumerate(body.items):
        where = f"items[{index}]"
        product = catalog.get(item.sku)
        if product is not None and product.always_out_of_stock:
            raise insufficient(item.sku, item.quantity, 0)
        if item.unit_price is not None and item.price is not None and item.unit_price != item.price:
            raise ApiError.field(
                f"{where}.price",
                "conflicts with unit_price",
                expected="only one of unit_price and price",
                received=str(item.price),
            )
        raw_price = item.unit_price if item.unit_price is not None else item.price
        if raw_price is None and product is not None and product.price is not None:
            if product.currency not in (None, currency):
                raise ApiError.field(
                    f"{where}.unit_price",
                    f"product {item.sku} is priced in {product.currency}, the order is in {currency}",
                    expected="a unit price in the order's currency",
                    code="MISSING_REQUIRED_FIELD",
                )
            raw_price = Decimal(product.price).scaleb(-6)
        if raw_price is None:
            raise ApiError.field(
                f"{where}.unit_price",
                "required field is missing (no product with this SKU has a price)",
                expected="a unit price (unit_price or price)",
                code="MISSING_REQUIRED_FIELD",
            )
        unit_price = parse_amount(
            raw_price, currency, f"{where}.unit_price" if item.unit_price is not None else f"{where}.price"
        )
        items.append(
            LineItem(
                id=new_id("li"),
                sku=item.sku,
                description=next(
                    (text for text in (item.description, item.name, product.name if product else None) if text), None
                ),
                quantity=item.quantity,
                unit_price=unit_price,
                total=unit_price * item.quantity,
                metadata=check_metadata(item.metadata, f"{where}.metadata"),
            )
        )
        if items[-1].total > MAX_AMOUNT_MICRO:
            raise ApiError.field(
                where,
                "quantity × unit_price is too large",
                expected="a line total of at most 1000000000000",
                received=None,
            )
    totals = price_order([line.total for line in items], currency, pricing)
    if totals.total > MAX_AMOUNT_MICRO:
        raise ApiError.field(
            "items", "the order total is too large", expected="a total of at most 1000000000000", received=None
        )
    customer_id, email = _customer(body)
    shipping_address = address_dict(body.shipping_address)
    shipping_method = None
    if body.shipping is not None:
        if shipping_address is not None and body.shipping.address is not None:
            raise ApiError.field(
                "shipping.address", "conflicts with shipping_address", expected="only one of them", received=None
            )
        shipping_address = shipping_address or address_dict(body.shipping.address)
        shipping_method = body.shipping.method
    return Order(
        id=new_id("ord"),
        workspace_id=workspace_id,
        mode=mode,
        order_number=0,
        status=OrderStatus.CREATED,
        currency=currency,
        customer_id=customer_id,
        customer_email=email,
        items=items,
        subtotal=totals.subtotal,
        tax=totals.tax,
        shipping=totals.shipping,
        total=totals.total,
        shipping_address=shipping_address,
        shipping_method=shipping_method,
        billing_address=address_dict(body.billing_address),
        metadata=check_metadata(body.metadata),
        notes=body.notes,
        version=1,
        created_at=now,
        updated_at=now,
    )


def _one_of(field: str, first: Any, second: Any) -> Any:
    if first is not None and second is not None and first != second:
        raise ApiError.field(field, "given twice with different values", expected="one value", received=str(second))
    return first if first is not None else second


def payment_request(body: PayIn, currency: str | None, *, livemode: bool, prefix: str = "") -> PaymentRequest:
    """A pay request from either spec shape; amounts in the order's currency, addresses checked.
    `currency` may be None only when the body has neither an amount nor a currency."""
    method_in = body.payment_method or PaymentMethodIn(type=body.method or "usdc")
    method = _one_of(f"{prefix}method", (body.method or "").lower() or None, method_in.type.lower())
    raw_amount = _one_of(f"{prefix}amount", body.amount, method_in.amount)
    amount = None if raw_amount is None else parse_amount(raw_amount, currency, f"{prefix}amount")
    if body.currency is not None and normalize_currency(body.currency, f"{prefix}currency") != currency:
        raise ApiError.field(
            f"{prefix}currency",
            f"the order is in {currency}; currency conversion is not supported",
            expected=currency,
            received=body.currency,
        )
    if body.test_mode is not None and livemode:
        raise ApiError.field(
            f"{prefix}test_mode", "simulated outcomes exist only in test mode", expected="no test_mode", received="fail"
        )
    wallet = _one_of(f"{prefix}payment_method.wallet_address", method_in.wallet_address, body.wallet_address)
    if wallet is not None:
        if method != "usdc":
            raise ApiError.field(
                f"{prefix}payment_method.wallet_address",
                "only USDC payments have a wallet",
                expected="no wallet",
                received=wallet,
            )
        try:
            wallet = normalize_wallet_address(wallet)
        except InvalidAddress as exc:
            raise ApiError.field(
                f"{prefix}payment_method.wallet_address",
                str(exc),
                expected="a stateset1… bech32 address or a 0x… EVM address (EIP-55 checksum when mixed-case)",
                received=wallet,
            ) from None
    return PaymentRequest(
        method=method,
        amount=amount,
        wallet_address=wallet,
        card_number=method_in.number,
        card_token=method_in.token,
        card_brand=method_in.brand,
        card_last4=method_in.last4,
        simulate_failure=body.test_mode == "fail",
        billing_address=address_dict(body.billing_address),
    )
