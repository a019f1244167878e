"""`Notices`: what was last said per resource and topic."""

from __future__ import annotations

from dsv4_operator.handlers.notices import Notices


def test_said_once_per_change_and_again_after_it_cleared() -> None:
    notices = Notices()
    assert notices.news("ns/a", "DrainFailed", "HTTP 403")
    assert not notices.news("ns/a", "DrainFailed", "HTTP 403")
    assert notices.news("ns/a", "DrainFailed", "HTTP 401")  # changed
    assert not notices.news("ns/a", "DrainFailed", None)  # over: cleared, not news
    assert notices.last("ns/a", "DrainFailed") is None
    assert notices.news("ns/a", "DrainFailed", "HTTP 401")  # again after it cleared


def test_topics_and_resources_are_apart() -> None:
    notices = Notices()
    assert notices.news("ns/a", "DrainFailed", "x")
    assert notices.news("ns/a", "WakeUpQueryFailed", "x")
    assert notices.news("ns/b", "DrainFailed", "x")
    notices.clear("ns/a", "DrainFailed")
    assert notices.last("ns/a", "WakeUpQueryFailed") == "x"
    assert notices.last("ns/b", "DrainFailed") == "x"


def test_a_forgotten_or_cleared_resource_leaves_no_entry() -> None:
    notices = Notices()
    notices.note("ns/a", "Waiting", "m")
    notices.note("ns/a", "FailedApply", "m")
    notices.note("ns/b", "Waiting", "m")
    notices.forget("ns/a")
    assert notices.resources() == {"ns/b"}
    notices.clear("ns/b", "Waiting")
    notices.clear("ns/c", "Waiting")  # never noted: nothing to do
    assert notices.resources() == frozenset()
