"""Talking to Factory's API: one request per run in the steady state.

Every request goes through :func:`alerter.http.request`: it ends by the run's deadline
whatever the server does, and its answer is capped in size and nesting.
Connection errors, 5xx and 429 are retried with exponential backoff and jitter (honouring
``Retry-After`` while the deadline allows); other 4xx are not. A 401/403 asks the login
for a fresh token once and repeats the request once.

``fetch_reading`` picks the endpoint: ``billing/limits`` (rate-limit windows) or
``subscription/usage`` (per-period token allowance), remembering in the state which one
serves this account so that a steady run makes a single request.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import requests

from alerter import http
from alerter.config import EU_BASE_URL, Config
from alerter.credentials import CredentialSettings, Login, LoginMemory, open_login
from alerter.errors import AuthError, UpstreamError
from alerter.meters import BadAnswer, Reading, parse_limits, parse_usage, uses_limits_billing
from alerter.redact import mask_url, redact

USAGE_PATH = "/api/organization/subscription/usage"
LIMITS_PATH = "/api/billing/limits"
REPROBE_SECONDS = 24 * 3600
USER_AGENT = "factory-usage-alert"
# A renewal of droid's login starts only while this much of the run is left (or 3/4 of it).
RENEW_RESERVE_SECONDS = 25.0
log = logging.getLogger(__name__)


class NotServed(UpstreamError):
    """The endpoint does not exist for this account (404/405) or says it is not in use."""


class FactoryClient:
    """A requests session bound to one base URL, one login and one deadline (a monotonic time)."""

    def __init__(
        self,
        base_url: str,
        login: Login,
        *,
        timeout: float = 10.0,
        deadline: float | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.login = login
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else time.monotonic() + 60.0
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        # Never False: TLS is always verified. Passed with each request, because a
        # session-wide setting loses to $REQUESTS_CA_BUNDLE.
        self.verify: str | bool = ca_bundle or True

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request (retrying as allowed) and return its JSON body.

        Raise NotServed on 404/405, AuthError when the token is refused even after a
        refresh, UpstreamError on anything else unusable.
        """
        refreshed = False
        while True:
            answer = self._send(method, path, **kwargs)
            if answer.status == 401 and not refreshed:
                refreshed = True
                if self.login.renew_after_refusal():
                    continue
            if answer.status == 401:
                self.login.refused()
            return self._body(answer, path)

    def _send(self, method: str, path: str, **kwargs: Any) -> http.Answer:
        url = self.base_url + path
        peer = f"Factory API at {path}"  # the path only: queries carry the user id
        attempt = 0
        while True:
            if self.deadline - time.monotonic() <= 0:
                raise UpstreamError(
                    f"Factory API did not answer {path} within the run's deadline; will retry next run"
                )
            headers = {"Authorization": f"Bearer {self.login.bearer()}"}
            problem: str
            retry_after: float | None = None
            try:
                answer = http.request(
                    method,
                    url,
                    peer=peer,
                    deadline=self.deadline,
                    session=self.session,
                    read_timeout=self.timeout,
                    headers=headers,
                    verify=self.verify,
                    **kwargs,
                )
            except http.PeerUnreachable as exc:
                if exc.tls:
                    raise UpstreamError(
                        f"TLS verification failed for {mask_url(self.base_url)}; "
                        "behind a corporate proxy, set factory.ca_bundle"
                    ) from None
                problem = exc.problem
                if exc.reason == "name not found":  # a typo in base_url, or no network at all
                    problem = (
                        f"unreachable (name not found: check the network and factory.base_url "
                        f"({mask_url(self.base_url)}))"
                    )
            except http.AnswerTooLarge:
                # The same answer would come again: refused at once, never retried.
                raise BadAnswer(
                    f"Factory API answered more than {http.MAX_ANSWER_BYTES} bytes at {path} "
                    "(a real answer is a few KB); refusing it"
                ) from None
            except http.PeerError as exc:  # timed out, or broke off its answer
                problem = exc.problem
            else:
                if answer.status == 429 or answer.status >= 500:
                    problem = f"answered HTTP {answer.status}"
                    retry_after = http.retry_after(answer)
                else:
                    return answer
            attempt += 1
            wait = retry_after if retry_after is not None else min(8.0, 0.5 * 2 ** (attempt - 1))
            wait += random.uniform(0, 0.25 * wait)
            if time.monotonic() + wait >= self.deadline:
                raise UpstreamError(f"Factory API {problem} at {path}; will retry next run")
            log.info("Factory API %s at %s; retrying in %.1f s", problem, path, wait)
            time.sleep(wait)  # backoff between attempts

    def _or_unset(self) -> str:
        """The way out of a refused key: unsetting FACTORY_API_KEY leaves droid's login
        (an account's own variable has no other login behind it)."""
        return ", or unset it to use droid's login" if self.login.place == "FACTORY_API_KEY" else ""

    def _body(self, answer: http.Answer, path: str) -> Any:
        status = answer.status
        if status in (404, 405):
            raise NotServed(f"Factory API answered HTTP {status} at {path}")
        if status == 401:
            if self.login.is_api_key:
                raise AuthError(
                    f"Factory refused {self.login.place} (HTTP 401): the key is wrong or revoked; "
                    "create a new key in Factory's settings" + self._or_unset()
                )
            raise AuthError(
                f"Factory refused droid's login from {self.login.place} (HTTP 401); "
                "run `droid` to log in again"
            )
        if status == 403:
            if self.login.is_api_key:
                raise AuthError(
                    f"Factory refused {self.login.place} (HTTP 403): only Manager/Owner keys may read usage"
                    + (self._or_unset().replace(", or", ";") or "; use a Manager or Owner key")
                )
            raise AuthError(
                f"Factory refused access to the organization for droid's login from {self.login.place} "
                "(HTTP 403); run `droid` to log in again (with an account of that organization)"
            )
        if 300 <= status < 400:
            raise UpstreamError(f"Factory API answered HTTP {status} (a redirect, not followed) at {path}")
        if status >= 400:
            raise UpstreamError(f"Factory API answered HTTP {status} at {path}")
        try:
            return answer.json()
        except http.UnusableJson as exc:
            kind = redact(answer.headers.get("Content-Type", "unknown type").split(";")[0], 60)
            what = f"{len(answer.body)} bytes of {kind}, {exc}" if answer.body.strip() else "an empty body"
            raise BadAnswer(f"Factory API answered HTTP {status} at {path} with {what}") from None


# --- choosing the endpoint -------------------------------------------------------------------


def fetch_usage(client: FactoryClient) -> Reading:
    """Return the allowance Reading: GET with useCache (and userId), POST when GET is 405."""
    params = {"useCache": "true"}
    if client.login.identity.user_id:
        params["userId"] = client.login.identity.user_id
    try:
        body = client.request_json("GET", USAGE_PATH, params=params)
    except NotServed as exc:
        if "405" not in str(exc):
            raise
        body = client.request_json("POST", USAGE_PATH, json={"useCache": True})
    return parse_usage(body)


def fetch_limits(client: FactoryClient, now: float) -> Reading:
    """Return the limits Reading. Raise NotServed when the account is not on limits billing."""
    body = client.request_json("GET", LIMITS_PATH)
    if uses_limits_billing(body) is False:
        raise NotServed("this account is not on rate-limit billing")
    if isinstance(body, dict) and body.get("limits") is None and "error" not in body:
        raise NotServed("Factory's billing/limits answer has no limits")
    return parse_limits(body, now)


def fetch_reading(client: FactoryClient, endpoint: str, memory: dict, now: float) -> tuple[Reading, dict]:
    """Given the configured endpoint and the remembered one, return (reading, new memory).

    ``auto`` uses the remembered endpoint while it keeps answering and asks again once a
    day; otherwise it tries billing/limits first and falls back to subscription/usage.
    """
    if endpoint == "limits":
        return fetch_limits(client, now), memory
    if endpoint == "allowance":
        return fetch_usage(client), memory
    known = memory.get("name") if isinstance(memory, dict) else None
    checked = memory.get("checked_at", 0) if isinstance(memory, dict) else 0
    fresh = isinstance(checked, (int, float)) and now - checked < REPROBE_SECONDS
    if known in ("limits", "allowance") and fresh:
        try:
            reading = fetch_limits(client, now) if known == "limits" else fetch_usage(client)
            return reading, memory
        except NotServed as exc:
            log.info("the remembered endpoint (%s) is no longer served (%s); probing again", known, exc)
    try:
        reading = fetch_limits(client, now)
    except NotServed as exc:
        log.debug("billing/limits not in use (%s); using subscription/usage", exc)
        reading = fetch_usage(client)
    return reading, {"name": reading.endpoint, "checked_at": now}


# --- the client for a run ---------------------------------------------------------------------


def connect(
    config: Config,
    env: Mapping[str, str],
    deadline: float,
    *,
    memory: LoginMemory | None = None,
    may_renew: bool = True,
) -> FactoryClient:
    """Given the config, return a Factory client with the login that was found.

    ``memory`` is what the state remembers about droid's tokens; ``may_renew`` is False
    for a dry run, which never renews droid's login nor writes its store.
    """
    login: Login = open_login(
        CredentialSettings(
            home=config.home,
            workos_url=config.workos_url,
            timeout_seconds=config.timeout_seconds,
            ca_bundle=config.ca_bundle,
            deadline=deadline,
            may_renew=may_renew,
            api_key_env=config.api_key_env,
            droid_store=config.droid_store,
            renew_reserve_seconds=min(RENEW_RESERVE_SECONDS, 0.75 * config.deadline_seconds),
            memory=memory,
        ),
        env,
    )
    base_url = config.base_url
    if not config.base_url_configured and login.identity.region == "eu":
        base_url = EU_BASE_URL
    log.debug("login from %s; asking %s", login.identity.source, base_url)
    return FactoryClient(
        base_url, login, timeout=config.timeout_seconds, deadline=deadline, ca_bundle=config.ca_bundle
    )
