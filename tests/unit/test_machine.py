"""The transition table, exhaustively and as a property: every reachable position stays in the table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.orders.machine import TRANSITIONS, IllegalTransition, Position, allowed_next, transition
from stateset_server.orders.status import OrderStatus as S
from stateset_server.orders.status import parse_status

SPEC_EDGES = {
    (S.CREATED, S.PAID), (S.CREATED, S.CANCELLED),
    (S.PAID, S.FULFILLED), (S.PAID, S.HELD), (S.PAID, S.REFUNDED),
    (S.FULFILLED, S.SHIPPED), (S.FULFILLED, S.CANCELLED),
    (S.SHIPPED, S.DELIVERED), (S.SHIPPED, S.RETURNED),
    (S.DELIVERED, S.RETURNED),
    (S.HELD, S.RELEASED), (S.HELD, S.CANCELLED),
    (S.RETURNED, S.REFUNDED),
    (S.DISPUTED, S.RESOLVED),
}  # fmt: skip
EXTENSIONS = {
    (S.CREATED, S.HELD),
    (S.PAID, S.DISPUTED), (S.FULFILLED, S.DISPUTED), (S.SHIPPED, S.DISPUTED), (S.DELIVERED, S.DISPUTED),
    (S.DISPUTED, S.REFUNDED),
}  # fmt: skip


def test_the_table_is_the_spec_plus_the_documented_extensions() -> None:
    edges = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert edges == SPEC_EDGES | EXTENSIONS


@pytest.mark.parametrize("start", [s for s in S if s in TRANSITIONS])
@pytest.mark.parametrize("target", list(S))
def test_every_pair_is_legal_exactly_when_the_table_says(start: S, target: S) -> None:
    position = Position(start, S.PAID if start in (S.HELD, S.DISPUTED) else None)
    if target in TRANSITIONS[start]:
        assert transition(position, target).status == target
    else:
        with pytest.raises(IllegalTransition) as caught:
            transition(position, target)
        assert caught.value.current == start and caught.value.requested == target
        assert caught.value.allowed == sorted(TRANSITIONS[start])


def test_terminal_statuses_go_nowhere() -> None:
    assert allowed_next(Position(S.CANCELLED)) == allowed_next(Position(S.REFUNDED)) == frozenset()


def test_released_continues_as_the_status_it_was_held_from() -> None:
    held = transition(Position(S.PAID), S.HELD)
    assert held == Position(S.HELD, S.PAID)
    released = transition(held, S.RELEASED)
    assert released == Position(S.RELEASED, S.PAID)
    assert allowed_next(released) == TRANSITIONS[S.PAID]
    assert transition(released, S.FULFILLED) == Position(S.FULFILLED)
    # Held again from RELEASED: it still stands for PAID.
    assert transition(released, S.HELD) == Position(S.HELD, S.PAID)
    created_hold = transition(transition(Position(S.CREATED), S.HELD), S.RELEASED)
    assert allowed_next(created_hold) == TRANSITIONS[S.CREATED]


def test_resolved_continues_as_the_status_it_was_disputed_from() -> None:
    disputed = transition(Position(S.SHIPPED), S.DISPUTED)
    resolved = transition(disputed, S.RESOLVED)
    assert resolved == Position(S.RESOLVED, S.SHIPPED)
    assert transition(resolved, S.DELIVERED) == Position(S.DELIVERED)
    assert transition(transition(Position(S.DELIVERED), S.DISPUTED), S.REFUNDED) == Position(S.REFUNDED)


@given(st.lists(st.sampled_from(list(S)), max_size=40))
def test_random_walks_stay_inside_the_table(targets: list[S]) -> None:
    position = Position(S.CREATED)
    for target in targets:
        try:
            following = transition(position, target)
        except IllegalTransition:
            continue
        assert target in allowed_next(position)
        assert (following.resume_status is not None) == (
            following.status in (S.HELD, S.DISPUTED, S.RELEASED, S.RESOLVED)
        )
        assert following.resume_status not in (S.HELD, S.DISPUTED, S.RELEASED, S.RESOLVED)
        position = following


def test_status_vocabulary_accepts_lowercase_and_aliases() -> None:
    assert parse_status("paid") == S.PAID and parse_status(" Shipped ") == S.SHIPPED
    assert parse_status("pending") == S.CREATED and parse_status("processing") == S.FULFILLED
    assert parse_status("nonsense") is None
