"""Logins and sessions: the OAuth token endpoint (password, JWT bearer, client credentials)
and the SOAP ``login()`` call, answered with the same payloads and error codes as Salesforce.

Secrets are compared in constant time and never echoed in errors or logs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "Authenticator",
    "Credentials",
    "LoginError",
    "Sessions",
    "soap_fault",
    "soap_login_response",
]

_PARTNER_NS = "urn:partner.soap.sforce.com"


@dataclass(frozen=True)
class Credentials:
    """What the sandbox accepts. ``repr`` hides the secrets so they never reach a log."""

    username: str
    password: str = field(repr=False)
    security_token: str = field(repr=False)
    consumer_key: str
    consumer_secret: str = field(repr=False)
    private_key_file: Path
    """The client's JWT signing key (its certificate is registered in the sandbox)."""


class LoginError(Exception):
    """A refused login: OAuth ``error``/``error_description`` (also used for SOAP faults)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class Sessions:
    """Live access tokens. Expiring them is how tests provoke ``INVALID_SESSION_ID``."""

    def __init__(self, org_id: str) -> None:
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self.org_id = org_id

    def issue(self) -> str:
        token = f"{self.org_id[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self._lock:
            self._tokens.add(token)
        return token

    def valid(self, token: str) -> bool:
        return token in self._tokens  # set membership is atomic under the GIL

    def expire_all(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count


def _eq(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class Authenticator:
    """Checks a login attempt against :class:`Credentials` and issues a session."""

    def __init__(
        self,
        credentials: Credentials,
        sessions: Sessions,
        *,
        trusted_ip: bool,
        audiences: frozenset[str],
    ) -> None:
        self.credentials = credentials
        self.sessions = sessions
        self.trusted_ip = trusted_ip
        self.audiences = audiences
        self._jwt_keys: list[rsa.RSAPublicKey] = []

    def register_certificate(self, pem: bytes) -> None:
        """Trust JWTs signed by the key of this (PEM) certificate, like a connected app."""
        key = x509.load_pem_x509_certificate(pem).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the JWT bearer flow needs an RSA certificate (RS256)")
        self._jwt_keys.append(key)

    # ------------------------------------------------------------------ OAuth

    def oauth_token(self, form: Mapping[str, str], authorization: str | None) -> str:
        """A new session for an OAuth token request, or :class:`LoginError`."""
        grant = form.get("grant_type")
        if grant == "password":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            self._check_password(form.get("username"), form.get("password"))
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self._check_jwt(form.get("assertion", ""))
        elif grant == "client_credentials":
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            if authorization and authorization.lower().startswith("basic "):
                try:
                    decoded = base64.b64decode(authorization[6:].strip()).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise LoginError("invalid_client", "invalid client credentials") from None
                client_id, _, client_secret = decoded.partition(":")
            self._check_client(client_id, client_secret)
        else:
            raise LoginError("unsupported_grant_type", "grant type not supported")
        return self.sessions.issue()

    def _check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if not _eq(client_id, self.credentials.consumer_key):
            raise LoginError("invalid_client_id", "client identifier invalid")
        if not _eq(client_secret, self.credentials.consumer_secret):
            raise LoginError("invalid_client", "invalid client credentials")

    def _check_password(self, username: str | None, password: str | None) -> None:
        creds = self.credentials
        ok_user = _eq(username, creds.username)
        ok_password = _eq(password, creds.password + creds.security_token) or (
            self.trusted_ip and _eq(password, creds.password)
        )
        if not (ok_user and ok_password):
            raise LoginError("invalid_grant", "authentication failure")

    def _check_jwt(self, assertion: str) -> None:
        try:
            head_b64, body_b64, sig_b64 = assertion.split(".")
            header = json.loads(_b64url(head_b64))
            claims = json.loads(_b64url(body_b64))
            signature = _b64url(sig_b64)
        except (ValueError, binascii.Error):
            raise LoginError("invalid_grant", "invalid assertion") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise LoginError("invalid_grant", "invalid assertion")
        signed = f"{head_b64}.{body_b64}".encode()
        for key in self._jwt_keys:
            try:
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
                break
            except InvalidSignature:
                continue
        else:
            raise LoginError("invalid_grant", "invalid assertion")
        if not isinstance(claims, dict):
            raise LoginError("invalid_grant", "invalid assertion")
        if not _eq(str(claims.get("iss", "")), self.credentials.consumer_key):
            raise LoginError("invalid_client_id", "client identifier invalid")
        if claims.get("aud") not in self.audiences:
            raise LoginError("invalid_grant", "audience is invalid")
        if not _eq(str(claims.get("sub", "")), self.credentials.username):
            raise LoginError("invalid_grant", "invalid assertion")
        try:
            # simple-salesforce sends exp as a *string* of epoch seconds; Salesforce takes it.
            expires = int(float(str(claims.get("exp"))))
        except ValueError:
            raise LoginError("invalid_grant", "invalid assertion") from None
        if expires < time.time():
            raise LoginError("invalid_grant", "expired access/refresh token")

    # ------------------------------------------------------------------ SOAP

    def soap_login(self, body: bytes) -> str:
        """A new session for a SOAP ``login()`` envelope, or :class:`LoginError`."""
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise LoginError("INVALID_LOGIN", "Invalid SOAP request") from None
        username = root.findtext(f".//{{{_PARTNER_NS}}}username")
        password = root.findtext(f".//{{{_PARTNER_NS}}}password")
        try:
            self._check_password(username, password)
        except LoginError:
            raise LoginError(
                "INVALID_LOGIN",
                "Invalid username, password, security token; or user locked out.",
            ) from None
        return self.sessions.issue()


def soap_login_response(
    *, token: str, instance_url: str, version: str, org_id: str, user_id: str, username: str
) -> bytes:
    """The ``loginResponse`` envelope; simple-salesforce reads sessionId and serverUrl."""
    server_url = f"{instance_url}/services/Soap/u/{version}/{org_id[:15]}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns="{_PARTNER_NS}"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><loginResponse><result>"
        f"<metadataServerUrl>{instance_url}/services/Soap/m/{version}/{org_id[:15]}"
        "</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
        f"<serverUrl>{server_url}</serverUrl>"
        f"<sessionId>{escape(token)}</sessionId><userId>{user_id}</userId>"
        f"<userInfo><organizationId>{org_id}</organizationId>"
        f"<userName>{escape(username)}</userName><userId>{user_id}</userId></userInfo>"
        "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
    ).encode()


def soap_fault(code: str, message: str) -> bytes:
    """A SOAP ``LoginFault`` (HTTP 500), with the ``sf:`` elements simple-salesforce reads."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()
