"""Choosing each server worker's CPU (`STATESET_PIN_WORKERS`)."""

from __future__ import annotations

import os

import pytest

from stateset_server import affinity


def test_workers_take_the_allowed_cpus_in_the_order_they_were_started() -> None:
    siblings = [4711, 4705, 4720]  # as /proc lists them: not necessarily sorted
    assert affinity.choose_cpu(4705, siblings, [2, 3, 5]) == 2
    assert affinity.choose_cpu(4711, siblings, [5, 3, 2]) == 3
    assert affinity.choose_cpu(4720, siblings, [2, 3, 5]) == 5


def test_more_workers_than_cpus_wrap_around() -> None:
    siblings = [10, 11, 12, 13, 14]
    assert [affinity.choose_cpu(pid, siblings, [0, 1]) for pid in siblings] == [0, 1, 0, 1, 0]


def test_nothing_to_choose_is_no_choice() -> None:
    assert affinity.choose_cpu(10, [10, 11], [0]) is None  # one CPU
    assert affinity.choose_cpu(12, [10, 11], [0, 1]) is None  # not one of the siblings


SQLITE, POSTGRES = "sqlite:///orders.db", "postgresql://localhost/orders"


@pytest.mark.parametrize(
    ("value", "workers", "url", "expected"),
    [
        ("true", 1, SQLITE, True),
        (" ON ", 2, POSTGRES, True),
        ("1", 1, POSTGRES, True),
        ("false", 4, SQLITE, False),
        ("0", 2, SQLITE, False),
        ("off", 2, SQLITE, False),
    ],
)
def test_the_setting_overrides_the_default(value: str, workers: int, url: str, expected: bool) -> None:
    assert affinity.resolve(workers, url, {affinity.ENV: value}) is expected


@pytest.mark.parametrize("value", [None, "", "auto", " AUTO "])
def test_by_default_two_or_more_sqlite_workers_are_pinned_where_there_are_two_cpus(value: str | None) -> None:
    env = {} if value is None else {affinity.ENV: value}
    two_cpus = len(affinity.allowed_cpus()) >= 2
    assert affinity.resolve(2, SQLITE, env) is two_cpus
    assert affinity.resolve(8, SQLITE, env) is two_cpus
    assert affinity.resolve(1, SQLITE, env) is False  # one worker keeps both CPUs for its threads
    assert affinity.resolve(2, POSTGRES, env) is False  # its own processes need the CPUs too


def test_a_malformed_setting_is_refused() -> None:
    with pytest.raises(ValueError, match=affinity.ENV):
        affinity.resolve(2, SQLITE, {affinity.ENV: "sometimes"})


def test_serve_tells_its_workers_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(affinity.ENV, "auto")
    assert affinity.tell_workers(2, POSTGRES) is False
    assert os.environ[affinity.ENV] == "false"
    monkeypatch.setenv(affinity.ENV, "yes")
    assert affinity.tell_workers(1, POSTGRES) is True
    assert os.environ[affinity.ENV] == "true"
    monkeypatch.setenv(affinity.ENV, "sometimes")
    with pytest.raises(ValueError, match=affinity.ENV):
        affinity.tell_workers(2, SQLITE)


def test_a_worker_not_asked_to_is_not_pinned() -> None:
    assert affinity.pin_this_worker({}) is None
    assert affinity.pin_this_worker({affinity.ENV: "false"}) is None
    assert affinity.pin_this_worker({affinity.ENV: "nonsense"}) is None  # serve refused it already
