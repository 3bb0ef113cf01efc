"""The operators' door: C{/metrics} for Prometheus and C{/healthz} for a load balancer.

It listens on its own endpoint (the C{metrics} setting, off by default) and not on the web
door, so the numbers about users and errors stay off the public port. C{/healthz} is also
served by the web door, where a load balancer checking that port looks for it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from chatd.doors.web import ChatRequest
from chatd.health import Health

log = Logger(namespace="chatd.doors.ops")


class MetricsResource(Resource):
    """The registry in Prometheus' text format; collecting reads counters, nothing blocks."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        # The format the scraper asks for: Prometheus' text format, or OpenMetrics.
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encode, content_type = choose_encoder(accept)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encode(self.registry)


class HealthResource(Resource):
    """200 C{ok}, or 503 with one line per part that did not answer in time.

    @param public: on the web door, which faces the internet, a line names only the part
        (C{database: not answering}); why, with the database's address, goes to the log
        and to the operators' endpoint.
    """

    isLeaf = True

    def __init__(self, health: Health, public: bool = False) -> None:
        super().__init__()
        self.health = health
        self.public = public

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(problems: list[str]) -> None:
            if gone:
                return
            if problems:
                log.warn("health check failed: {why}", why="; ".join(problems))
                request.setResponseCode(503)
                if self.public:
                    problems = [p.split(":", 1)[0] + ": not answering" for p in problems]
            body = "\n".join(problems) if problems else "ok"
            request.write(body.encode("utf-8") + b"\n")
            request.finish()

        defer.ensureDeferred(self.health.problems()).addCallback(answer)
        return NOT_DONE_YET


class OpsSite(Site):
    """No access-log line per request: a scraper and a load balancer ask every few seconds."""

    requestFactory = ChatRequest  # no Server header with twisted.web's version

    def log(self, request: Any) -> None:
        pass


def make_ops_site(registry: CollectorRegistry, health: Health) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource(health))
    site = OpsSite(root)
    site.displayTracebacks = False
    return site
