"""The latency histograms: what a scrape shows is what prometheus_client's own Histogram
would show for the same observations (chatd keeps them in plain numbers, see
L{chatd.metrics.Latency})."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chatd.metrics import LATENCY_BUCKETS, Latency


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_scrape_shows_what_a_prometheus_histogram_would():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    latency = Latency("chatd_store_batch_seconds", "a batch", LATENCY_BUCKETS)
    ours.register(latency)
    reference = Histogram(
        "chatd_store_batch_seconds", "a batch", buckets=LATENCY_BUCKETS, registry=theirs
    )
    # On a bound (it counts in that bucket), between bounds, past the last, and zero.
    for seconds in (0.0, 0.001, 0.0011, 0.0025, 0.003, 0.3, 0.3, 10.0, 12.5):
        latency.observe(seconds)
        reference.observe(seconds)
    shown = samples(ours)
    assert shown == samples(theirs)
    assert shown["chatd_store_batch_seconds_bucket", "0.001"] == 2
    assert shown["chatd_store_batch_seconds_bucket", "0.0025"] == 4
    assert shown["chatd_store_batch_seconds_bucket", "10.0"] == 8
    assert shown["chatd_store_batch_seconds_bucket", "+Inf"] == 9
    assert shown["chatd_store_batch_seconds_count", ""] == 9
    assert "chatd_store_batch_seconds_created" in generate_latest(ours).decode()
