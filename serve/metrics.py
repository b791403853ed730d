"""Prometheus counters of the head-profile front end, exposed on vLLM's own `/metrics`.

They live in prometheus_client's default registry, which vLLM's `/metrics` serves (in multi-process API-server
mode prometheus_client writes them to `PROMETHEUS_MULTIPROC_DIR`, which vLLM collects from).
"""

from __future__ import annotations

import functools


@functools.cache
def counters():
    from prometheus_client import Counter

    requests = Counter(
        "vseam_head_profile_requests",
        "Generation requests by the head profile that served them and how it was chosen",
        ["profile", "via"],
    )
    rejected = Counter(
        "vseam_head_profile_rejections",
        "Requests refused because of their head profile choice (unknown_profile, static_mode, conflict, bad_field)",
        ["reason"],
    )
    admin = Counter(
        "vseam_head_profile_admin",
        "Head profiles loaded or retired at run time through the admin routes",
        ["action"],
    )
    return requests, rejected, admin


def count_request(profile: str, via: str) -> None:
    counters()[0].labels(profile=profile, via=via).inc()


def count_rejection(reason: str) -> None:
    counters()[1].labels(reason=reason).inc()


def count_admin(action: str) -> None:
    counters()[2].labels(action=action).inc()
