"""The coordinator's bookkeeping, as a table of moves (no Ray: this runs in the quick suite)."""

from __future__ import annotations

from weightlift.downloader.fanout.ledger import Kind, Ledger

A, B, C = "a", "b", "c"


def test_one_node_fetches_a_chunk_the_others_read_it_and_it_is_released() -> None:
    ledger = Ledger([10, 10], [A, B, C], budget=100)
    assert ledger.claim(0, A).kind is Kind.OWN
    assert ledger.claim(0, B).kind is Kind.WAIT_PEER
    assert ledger.claim(0, A).kind is Kind.OWN  # a retry by its owner stays its own
    assert ledger.publish(0, A, "ref0", "meta") == []
    ready = ledger.claim(0, B)
    assert (ready.kind, ready.ref, ready.meta) == (Kind.READY, "ref0", "meta")
    assert ledger.written(0, B) == []
    assert ledger.held == 10
    assert ledger.written(0, C) == ["ref0"]  # the last reader releases it
    assert ledger.held == 0
    # A node asking after the release (a late resume) fetches it alone, without publishing.
    assert ledger.claim(0, C).kind is Kind.ORIGIN


def test_the_budget_holds_back_new_claims_until_a_release() -> None:
    ledger = Ledger([10, 10, 10], [A, B], budget=20)
    assert ledger.claim(0, A).kind is Kind.OWN
    assert ledger.claim(1, B).kind is Kind.OWN
    assert ledger.claim(2, A).kind is Kind.WAIT_BUDGET
    ledger.publish(0, A, "r0", None)
    ledger.written(0, B)
    assert ledger.claim(2, A).kind is Kind.OWN
    assert ledger.peak_held == 20
    assert ledger.stats()["forced"] == 0


def test_a_forced_claim_passes_a_full_budget_and_is_counted() -> None:
    ledger = Ledger([10, 10], [A, B], budget=10)
    ledger.claim(0, A)
    assert ledger.claim(1, B).kind is Kind.WAIT_BUDGET
    assert ledger.claim(1, B, force=True).kind is Kind.OWN
    assert ledger.forced == 1
    assert ledger.peak_held == 20


def test_the_first_claim_always_passes_even_past_the_budget() -> None:
    ledger = Ledger([50], [A], budget=10)  # a chunk larger than the budget: never stuck
    assert ledger.claim(0, A).kind is Kind.OWN


def test_a_failed_origin_fetch_gives_the_chunk_to_the_next_asker() -> None:
    ledger = Ledger([10], [A, B], budget=100)
    ledger.claim(0, A)
    ledger.abandon(0, A)
    assert ledger.held == 0
    assert ledger.claim(0, B).kind is Kind.OWN


def test_a_node_that_leaves_frees_its_claims_and_stops_holding_releases() -> None:
    ledger = Ledger([10, 10], [A, B, C], budget=100)
    ledger.claim(0, A)  # A dies while fetching chunk 0
    ledger.claim(1, B)
    ledger.publish(1, B, "r1", None)  # chunk 1 now waits for A and C
    ledger.written(1, C)
    assert ledger.leave(A) == ["r1"]  # nobody left needs chunk 1
    assert ledger.claim(0, C).kind is Kind.OWN  # chunk 0 is reassigned
    assert ledger.claim(0, A).kind is Kind.ORIGIN  # a node that left shares nothing more


def test_a_lost_publication_is_fetched_again_and_a_stale_report_ignored() -> None:
    ledger = Ledger([10], [A, B, C], budget=100)
    ledger.claim(0, A)
    ledger.publish(0, A, "r0", None)
    first = ledger.claim(0, B)
    assert ledger.lost(0, first.version) == ["r0"]  # its owner died with it
    assert ledger.claim(0, B).kind is Kind.OWN
    ledger.publish(0, B, "r0b", None)
    assert ledger.lost(0, first.version) == []  # C's late report about the old copy
    assert ledger.claim(0, C).ref == "r0b"


def test_a_second_publication_of_a_chunk_keeps_the_first() -> None:
    ledger = Ledger([10], [A, B, C], budget=100)
    ledger.claim(0, A)
    ledger.publish(0, A, "r0", None)
    assert ledger.publish(0, B, "dup", None) == ["dup"]
    assert ledger.claim(0, C).ref == "r0"
