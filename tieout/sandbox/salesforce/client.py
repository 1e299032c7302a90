"""Build a real :class:`simple_salesforce.Salesforce` aimed at a :class:`SalesforceSandbox`.

No patching: every flow goes through simple-salesforce's public constructor. Its login URLs
are ``https://{domain}.salesforce.com/...``, so ``domain=sandbox.login_domain`` (a host:port
followed by ``/login``) turns them into ``https://127.0.0.1:PORT/login.salesforce.com/...``,
which the sandbox serves. The REST/Bulk URLs come from the instance the login returns.
"""

from __future__ import annotations

from typing import Literal

import requests
from simple_salesforce.api import DEFAULT_API_VERSION, Salesforce

from tieout.sandbox.salesforce.server import SalesforceSandbox

__all__ = ["LoginFlow", "fetch_token", "sandbox_client", "sandbox_session"]

LoginFlow = Literal["soap", "oauth_password", "jwt", "client_credentials", "direct"]


def sandbox_session(sandbox: SalesforceSandbox) -> requests.Session:
    """A session that trusts the sandbox CA (and only it).

    ``trust_env`` is off so proxy variables cannot route loopback traffic through a proxy
    and ``REQUESTS_CA_BUNDLE`` cannot replace the sandbox CA.
    """
    session = requests.Session()
    session.verify = sandbox.ca_bundle
    session.trust_env = False
    return session


def fetch_token(
    sandbox: SalesforceSandbox, session: requests.Session | None = None
) -> tuple[str, str]:
    """``(access_token, instance_url)`` from the OAuth password flow, with plain requests."""
    creds = sandbox.credentials
    http = session or sandbox_session(sandbox)
    response = http.post(
        sandbox.token_url,
        data={
            "grant_type": "password",
            "client_id": creds.consumer_key,
            "client_secret": creds.consumer_secret,
            "username": creds.username,
            "password": creds.password + creds.security_token,
        },
        timeout=30,
    )
    response.raise_for_status()
    payload = response.json()
    return str(payload["access_token"]), str(payload["instance_url"])


def sandbox_client(
    sandbox: SalesforceSandbox,
    flow: LoginFlow = "soap",
    *,
    version: str = DEFAULT_API_VERSION,
    session: requests.Session | None = None,
) -> Salesforce:
    """A logged-in client. All flows but ``direct`` re-login by themselves on an expired
    session (simple-salesforce retries a REST call once it gets ``INVALID_SESSION_ID``).

    Flows: ``soap`` (username + password + security token), ``oauth_password`` (connected
    app + username/password), ``jwt`` (JWT bearer, RS256 with the sandbox's key),
    ``client_credentials`` and ``direct`` (a token fetched with requests, then
    ``Salesforce(instance_url=..., session_id=...)``: no automatic re-login).
    """
    creds = sandbox.credentials
    http = session or sandbox_session(sandbox)
    domain = sandbox.login_domain
    if flow == "soap":
        return Salesforce(
            username=creds.username,
            password=creds.password,
            security_token=creds.security_token,
            domain=domain,
            version=version,
            session=http,
        )
    if flow == "oauth_password":
        # simple-salesforce sends the password as given: append the token, as Salesforce wants.
        return Salesforce(
            username=creds.username,
            password=creds.password + creds.security_token,
            consumer_key=creds.consumer_key,
            consumer_secret=creds.consumer_secret,
            domain=domain,
            version=version,
            session=http,
        )
    if flow == "jwt":
        # instance_url picks the token host; domain stays "login" so aud is the real one.
        return Salesforce(
            username=creds.username,
            consumer_key=creds.consumer_key,
            privatekey_file=sandbox.jwt_private_key_file,
            instance_url=domain,
            version=version,
            session=http,
        )
    if flow == "client_credentials":
        return Salesforce(
            consumer_key=creds.consumer_key,
            consumer_secret=creds.consumer_secret,
            domain=domain,
            version=version,
            session=http,
        )
    if flow == "direct":
        token, instance_url = fetch_token(sandbox, http)
        return Salesforce(
            instance_url=instance_url, session_id=token, version=version, session=http
        )
    raise ValueError(f"unknown login flow {flow!r}")
