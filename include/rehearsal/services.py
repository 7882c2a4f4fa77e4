"""The control plane's services as runbooks reach them: HTTP/JSON clients for the API, the scheduler and the
reconciler (``docs/control-plane-services.md``), the same against the sandbox and a real platform."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from rehearsal.errors import PreconditionFailed, RehearsalError

SERVICES = ("api", "scheduler", "reconciler")  # the plan's restore order
MODES = ("read-write", "read-only", "frozen")


class ServiceUnreachable(RehearsalError):
    """A service did not answer (refused, timed out, or answered garbage); the message names it and its address."""

    kind = "refused"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def call(method: str, url: str, body: dict | None = None, timeout: float = 3.0, headers: dict | None = None,
         service: str = "service") -> Answer:
    """One JSON request. HTTP errors are answers (status and body); no answer at all raises ``ServiceUnreachable``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Answer(resp.status, _json(resp.read()))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, _json(exc.read()))
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnreachable(f"{service} at {url} did not answer: {reason}") from None


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"raw": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True)
class ServiceAddresses:
    """Where the services are: the ``controlplane_services`` connection's extra."""

    api: str
    scheduler: str
    reconciler: str
    agents_record: str = ""
    discovery_zone_id: str = ""
    canary_app: str = ""  # the app of the platform's own that runbooks' probes write to (never a customer's)
    # Where each service runs in each region (``{"us-west-2": {"api": url, ...}}``): a region's standby control plane
    regions: dict | None = None
    # SRV records naming where each service runs now (``{"api": "_controlplane-api._tcp.<zone>"}``): a control plane
    # that moved to another region is found through them; the URLs above are used while a record is missing
    service_records: dict | None = None

    @classmethod
    def from_extra(cls, extra: dict) -> ServiceAddresses:
        missing = [k for k in SERVICES if not extra.get(k)]
        if missing:
            raise PreconditionFailed(f"the controlplane_services connection names no URL for {', '.join(missing)}")
        known = {k: str(extra[k]).rstrip("/") for k in (*SERVICES, "agents_record", "discovery_zone_id", "canary_app")
                 if extra.get(k) not in (None, "")}
        for key in ("regions", "service_records"):
            if isinstance(extra.get(key), dict) and extra[key]:
                known[key] = extra[key]
        return cls(**known)

    def region_url(self, region: str, service: str) -> str:
        """Where ``service`` runs in ``region``; the refusal names the setting to add."""
        url = ((self.regions or {}).get(region) or {}).get(service)
        if not url:
            raise PreconditionFailed(f"the controlplane_services connection names no {service} URL for region {region!r} "
                                     f"(its extra's regions.{region}.{service}): the standby control plane there "
                                     "cannot be reached")
        return str(url).rstrip("/")

    def with_urls(self, urls: dict[str, str]) -> ServiceAddresses:
        from dataclasses import replace

        return replace(self, **{k: v.rstrip("/") for k, v in urls.items() if k in SERVICES})

    def url(self, service: str) -> str:
        if service not in SERVICES:
            raise PreconditionFailed(f"unknown service {service!r}: use one of {', '.join(SERVICES)}")
        return getattr(self, service)


@dataclass(frozen=True)
class Health:
    service: str
    ok: bool
    detail: str
    body: dict

    def to_dict(self) -> dict:
        return {"service": self.service, "ok": self.ok, "detail": self.detail, "body": self.body}


def health(service: str, url: str, timeout: float = 2.0) -> Health:
    """``GET /healthz``: ok only on a 200 with status ok; an unreachable service is unhealthy, not an error."""
    try:
        answer = call("GET", f"{url}/healthz", timeout=timeout, service=service)
    except ServiceUnreachable as exc:
        return Health(service, False, str(exc), {})
    ok = answer.status == 200 and answer.body.get("status") == "ok"
    detail = ", ".join(f"{k} {v}" for k, v in answer.body.items()) or f"HTTP {answer.status}"
    return Health(service, ok, f"HTTP {answer.status}: {detail}", answer.body)


class Api:
    """The control-plane API: its mode, reads and mutations."""

    def __init__(self, url: str, actor: str = "rehearsal", timeout: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.actor = actor
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None, maintenance: str | None = None) -> Answer:
        headers = {"X-Actor": self.actor, **({"X-Maintenance": maintenance} if maintenance else {})}
        return call(method, f"{self.url}{path}", body, self.timeout, headers, service="control-plane API")

    def health(self) -> Health:
        return health("api", self.url)

    def identity(self) -> dict:
        """``GET /v1/identity``: ``{"identity": ...}``, what this API says it is (drills check it before a fault)."""
        answer = self._call("GET", "/v1/identity")
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise ServiceUnreachable(f"control-plane API at {self.url}/v1/identity answered {answer.status}: {answer.body}")
        return {"identity": answer.body.get("identity")}

    def mode(self) -> str:
        answer = self._call("GET", "/v1/mode")
        if not answer.ok:
            raise ServiceUnreachable(f"control-plane API at {self.url}: GET /v1/mode answered HTTP {answer.status} {answer.body}")
        return answer.body["mode"]

    def set_mode(self, mode: str, reason: str) -> str:
        if mode not in MODES:
            raise PreconditionFailed(f"unknown API mode {mode!r}: use one of {', '.join(MODES)}")
        answer = self._call("PUT", "/v1/mode", {"mode": mode, "reason": reason})
        if not answer.ok:
            raise ServiceUnreachable(f"control-plane API at {self.url} refused mode {mode}: HTTP {answer.status} {answer.body}")
        return answer.body.get("mode", mode)

    def apps(self) -> list[dict]:
        answer = self._call("GET", "/v1/apps")
        if not answer.ok:
            raise ServiceUnreachable(f"control-plane API at {self.url}: GET /v1/apps answered HTTP {answer.status} {answer.body}")
        return answer.body["apps"]

    def app(self, app_id: int) -> Answer:
        return self._call("GET", f"/v1/apps/{app_id}")

    def mutate(self, action: str, app_id: int, payload: dict, request_id: str | None = None,
               maintenance: str | None = None) -> Answer:
        """One mutation (``deploy``, ``scale`` or ``update_config``); the answer, whatever it is.

        :param maintenance: a runbook's own write while the API is frozen (a canary, drift repair): the reason,
            sent as ``X-Maintenance``; everyone else's writes stay refused
        """
        request_id = request_id or f"rehearsal-{uuid.uuid4()}"
        body = {**payload, "request_id": request_id}
        if action == "deploy":
            return self._call("POST", f"/v1/apps/{app_id}/releases", body, maintenance)
        if action == "scale":
            return self._call("POST", f"/v1/apps/{app_id}/scale", body, maintenance)
        if action == "update_config":
            return self._call("PATCH", f"/v1/apps/{app_id}/config", body, maintenance)
        raise PreconditionFailed(f"unknown mutation {action!r}: use deploy, scale or update_config")

    def metrics(self) -> dict:
        answer = self._call("GET", "/v1/metrics")
        if not answer.ok:
            raise ServiceUnreachable(f"control-plane API at {self.url}: GET /v1/metrics answered HTTP {answer.status}")
        return answer.body


class Reconciler:
    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def health(self) -> Health:
        return health("reconciler", self.url)

    def metrics(self, since: float | None = None) -> dict:
        """:param since: the time-to-converge SLI over changes made since this unix time (and any still waiting)"""
        query = f"?since={since:.3f}" if since is not None else ""
        answer = call("GET", f"{self.url}/v1/metrics{query}", timeout=self.timeout, service="reconciler")
        if not answer.ok:
            raise ServiceUnreachable(f"reconciler at {self.url}: GET /v1/metrics answered HTTP {answer.status} {answer.body}")
        return answer.body

    def set_rate(self, rate: float) -> float:
        answer = call("PUT", f"{self.url}/v1/rate", {"rate": rate}, timeout=self.timeout, service="reconciler")
        if not answer.ok:
            raise ServiceUnreachable(f"reconciler at {self.url} refused rate {rate}: HTTP {answer.status} {answer.body}")
        return float(answer.body.get("rate", rate))

