"""How an order is shown: money as exact strings, times as ISO 8601, both spec vocabularies."""

from __future__ import annotations

from stateset_server.core.clock import iso
from stateset_server.core.money import format_amount
from stateset_server.orders.document import payment_url
from stateset_server.orders.model import Order
from stateset_server.orders.schemas import (
    CardOut,
    CustomerRef,
    FeesOut,
    LineItemOut,
    OrderOut,
    PaymentOut,
    PaymentSummary,
    ShippingDetails,
    TimelineEntry,
)
from stateset_server.payments.model import Payment
from stateset_server.storage import Row

__all__ = ["customer_ref", "order_out", "payment_out", "timeline"]


def _when(micros: int | None) -> str | None:
    return None if micros is None else iso(micros)


def payment_out(payment: Payment) -> PaymentOut:
    money = payment.currency
    return PaymentOut(
        id=payment.id,
        order_id=payment.order_id,
        status=payment.status,
        method=payment.method,
        amount=format_amount(payment.amount, money),
        amount_refunded=format_amount(payment.amount_refunded, money),
        currency=money,
        fees=FeesOut(format_amount(payment.network_fee, money), format_amount(payment.processing_fee, money)),
        wallet_address=payment.wallet_address,
        card=CardOut(payment.card_brand, payment.card_last4) if payment.method == "card" else None,
        transaction_hash=payment.transaction_hash,
        paid_at=iso(payment.created_at),
    )


def _summary(order: Order) -> PaymentSummary | None:
    if not order.payments:
        return None
    latest = order.payments[-1]
    if order.amount_refunded and order.amount_refunded >= order.amount_paid:
        status = "REFUNDED"
    elif order.amount_refunded:
        status = "PARTIALLY_REFUNDED"
    elif order.amount_paid >= order.total:
        status = "PAID"
    else:
        status = "PARTIALLY_PAID"
    return PaymentSummary(
        id=latest.id,
        status=status,
        amount=format_amount(order.amount_paid, order.currency),
        method=latest.method.upper(),
        paid_at=iso(order.paid_at if order.paid_at is not None else latest.created_at),
        transaction_hash=latest.transaction_hash,
    )


def customer_ref(customer_id: str | None, email: str | None) -> CustomerRef | None:
    return CustomerRef(customer_id, email) if customer_id is not None or email is not None else None


def order_out(order: Order, base_url: str) -> OrderOut:
    money = order.currency
    items = [
        LineItemOut(
            id=item.id,
            sku=item.sku,
            description=item.description,
            quantity=item.quantity,
            unit_price=format_amount(item.unit_price, money),
            price=format_amount(item.unit_price, money),
            total_price=format_amount(item.total, money),
            status=order.status.value,
            metadata=item.metadata,
        )
        for item in order.items
    ]
    total = format_amount(order.total, money)
    return OrderOut(
        id=order.id,
        order_number=order.order_number,
        status=order.status.value,
        livemode=order.mode == "live",
        currency=money,
        customer_id=order.customer_id,
        customer_email=order.customer_email,
        customer=customer_ref(order.customer_id, order.customer_email),
        items=items,
        line_items=items,
        subtotal=format_amount(order.subtotal, money),
        tax=format_amount(order.tax, money),
        shipping=format_amount(order.shipping, money),
        total=total,
        total_amount=total,
        shipping_address=order.shipping_address,
        shipping_method=order.shipping_method,
        billing_address=order.billing_address,
        metadata=order.metadata,
        notes=order.notes,
        payment_url=payment_url(base_url, order.id),
        created_at=iso(order.created_at),
        updated_at=iso(order.updated_at),
        amount_paid=format_amount(order.amount_paid, money),
        amount_refunded=format_amount(order.amount_refunded, money),
        amount_due=format_amount(order.amount_due, money),
        payment=_summary(order),
        payments=[payment_out(p) for p in order.payments],
        shipping_details=ShippingDetails(
            method=order.shipping_method,
            carrier=order.carrier,
            tracking_number=order.tracking_number,
            estimated_delivery=_when(order.estimated_delivery),
            shipped_at=_when(order.shipped_at),
            delivered_at=_when(order.delivered_at),
        ),
        status_reason=order.status_reason,
        resume_status=order.resume_status.value if order.resume_status else None,
        paid_at=_when(order.paid_at),
        fulfilled_at=_when(order.fulfilled_at),
        cancelled_at=_when(order.cancelled_at),
    )


def timeline(events: list[Row]) -> list[TimelineEntry]:
    """One step per status the order entered, from its events in commit order."""
    steps: list[TimelineEntry] = []
    for row in events:
        status = row["object_status"]
        if status is not None and (not steps or steps[-1].status != status):
            steps.append(TimelineEntry(status, iso(row["created_at"]), row["type"], row["id"]))
    return steps
