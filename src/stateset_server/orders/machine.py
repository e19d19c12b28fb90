"""The order state machine: one transition table, pure (no I/O, no clock).

The spec's lifecycle table, exactly:
    CREATED→PAID|CANCELLED; PAID→FULFILLED|HELD|REFUNDED; FULFILLED→SHIPPED|CANCELLED;
    SHIPPED→DELIVERED|RETURNED; DELIVERED→RETURNED; HELD→RELEASED|CANCELLED; RETURNED→REFUNDED;
    DISPUTED→RESOLVED; CANCELLED and REFUNDED are terminal.
Where the spec is incomplete, these documented extensions:
- a fresh CREATED order may be HELD (the spec's fraud example holds a just-created order);
- DISPUTED is reachable from PAID, FULFILLED, SHIPPED and DELIVERED, and a dispute ends RESOLVED
  (the merchant keeps the money) or REFUNDED;
- RELEASED continues exactly as the status the order was held from, and RESOLVED exactly as the
  status it was disputed from: the order remembers that status (`resume_status`) and offers its moves.
"""

from __future__ import annotations

from dataclasses import dataclass

from stateset_server.orders.status import OrderStatus as S

__all__ = ["TRANSITIONS", "IllegalTransition", "Position", "allowed_next", "effective_status", "transition"]

TRANSITIONS: dict[S, frozenset[S]] = {
    S.CREATED: frozenset({S.PAID, S.CANCELLED, S.HELD}),
    S.PAID: frozenset({S.FULFILLED, S.HELD, S.REFUNDED, S.DISPUTED}),
    S.FULFILLED: frozenset({S.SHIPPED, S.CANCELLED, S.DISPUTED}),
    S.SHIPPED: frozenset({S.DELIVERED, S.RETURNED, S.DISPUTED}),
    S.DELIVERED: frozenset({S.RETURNED, S.DISPUTED}),
    S.HELD: frozenset({S.RELEASED, S.CANCELLED}),
    S.RETURNED: frozenset({S.REFUNDED}),
    S.DISPUTED: frozenset({S.RESOLVED, S.REFUNDED}),
    S.CANCELLED: frozenset(),
    S.REFUNDED: frozenset(),
    # RELEASED and RESOLVED have no row of their own: they move like their resume status.
}
# Statuses that pause an order and remember where it was.
_PAUSING = {S.HELD, S.DISPUTED}
# Statuses that continue as the remembered status.
_CONTINUING = {S.RELEASED, S.RESOLVED}


@dataclass(frozen=True, slots=True)
class Position:
    """Where an order is: its status, and for paused or continued orders the status it stands for."""

    status: S
    resume_status: S | None = None


class IllegalTransition(Exception):
    def __init__(self, position: Position, requested: S) -> None:
        self.current = position.status
        self.requested = requested
        self.allowed = sorted(allowed_next(position))
        super().__init__(f"An order in status {self.current} cannot become {requested}")


def effective_status(position: Position) -> S:
    """The status whose moves apply: a RELEASED order from PAID moves like PAID."""
    if position.status in _CONTINUING:
        assert position.resume_status is not None, "RELEASED/RESOLVED orders remember a status"
        return position.resume_status
    return position.status


def allowed_next(position: Position) -> frozenset[S]:
    return TRANSITIONS[effective_status(position)]


def transition(position: Position, target: S) -> Position:
    """The position after moving to `target`, or IllegalTransition."""
    if target not in allowed_next(position):
        raise IllegalTransition(position, target)
    if target in _PAUSING:
        return Position(target, effective_status(position))
    if target in _CONTINUING:
        return Position(target, position.resume_status)
    return Position(target)
