"""Typed settings from `dagster_project.toml`, validated at load.

Secrets never live in the file: values may reference the environment as `${NAME}` or
`${NAME:-default}` and are resolved only when used (`resolve_env`), so a settings object can be
printed, logged or put in metadata without leaking anything.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tieout.errors import ConfigError
from tieout.schema import TABLES

SETTINGS_ENV: Final = "TIEOUT_SETTINGS"
SETTINGS_FILE: Final = "dagster_project.toml"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def _identifier(value: str) -> str:
    """Identifiers from config end up in SQL: allow only plain names (no quotes, dots, spaces)."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain SQL identifier (letters, digits, _ and $, "
            "starting with a letter or _, at most 63 characters)"
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


def pure_env_reference(template: str) -> str | None:
    """The variable name when `template` is exactly `${NAME}` (what `dagster.EnvVar` can carry)."""
    m = _ENV_REF.fullmatch(template.strip())
    if m and m.group(2) is None:
        return m.group(1)
    return None


def resolve_env(template: str, key_path: str) -> str:
    """Expand `${NAME}` / `${NAME:-default}`; the error names the setting, never a value."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(
            f"{key_path}: environment variable {name} is not set; export it or give a "
            f"default in {SETTINGS_FILE} as ${{{name}:-...}}"
        )

    return _ENV_REF.sub(sub, template)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableMapping(_Model):
    """How one canonical table is read from a billing database that differs from the reference.

    Either rename (`table` and/or `columns`: canonical name -> source column) or give a `query`
    that returns the canonical columns (plus the window column) under their canonical names.
    """

    table: Identifier | None = Field(default=None, description="Source table name.")
    columns: dict[str, Identifier] = Field(
        default_factory=dict, description="Canonical column -> source column renames."
    )
    query: str | None = Field(
        default=None,
        description="One SELECT returning the canonical columns (and the window column).",
    )

    @field_validator("query")
    @classmethod
    def _single_select(cls, v: str | None) -> str | None:
        if v is None:
            return v
        body = v.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", body):
            raise ValueError("query must be a single SELECT (or WITH ... SELECT) statement")
        if ";" in body:
            raise ValueError("query must be a single statement: remove the ';' inside it")
        return body

    @model_validator(mode="after")
    def _one_style(self) -> TableMapping:
        if self.query is not None and (self.table is not None or self.columns):
            raise ValueError("give either query or table/columns, not both")
        return self


def _no_literal_password(v: str, env_name: str) -> str:
    # A reference without default stands for itself (\x00); a default is literal text.
    shown = _ENV_REF.sub(lambda m: m.group(2) if m.group(2) is not None else "\x00", v)
    m = re.search(r"://[^/@:]*:([^/@]+)@", shown)
    if m and m.group(1).strip("\x00"):
        raise ValueError(
            "the URL contains a password; put it in the environment and write "
            f'url = "${{{env_name}}}"'
        )
    return v


def _check_timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"{v!r} is not an IANA time zone (e.g. 'UTC', 'America/New_York')"
        ) from exc
    return v


class BillingSettings(_Model):
    """The billing database tieout extracts from."""

    url: str = Field(
        default="${BILLING_DATABASE_URL:-sqlite:///data/demo/billing.db}",
        description="SQLAlchemy URL of the billing database; use ${ENV} for anything secret.",
    )
    schema_: Identifier | None = Field(
        default="billing", alias="schema", description="Postgres schema; ignored by SQLite."
    )
    partitions_start: date = Field(
        default=date(2026, 1, 1), description="First business day of the daily partitions."
    )
    tables: dict[str, TableMapping] = Field(
        default_factory=dict,
        description="Per-table mapping for databases that differ from the reference schema.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, v: dict[str, TableMapping]) -> dict[str, TableMapping]:
        for name, mapping in v.items():
            if name not in TABLES:
                raise ValueError(f"unknown table {name!r}; known tables: {', '.join(TABLES)}")
            spec = TABLES[name]
            allowed = set(spec.column_names) | {spec.window_column}
            for col in mapping.columns:
                if col not in allowed:
                    raise ValueError(
                        f"{name}.columns.{col}: not a canonical column of {name} "
                        f"(valid: {', '.join(sorted(allowed))})"
                    )
        return v

    @field_validator("url")
    @classmethod
    def _url_not_literal_secret(cls, v: str) -> str:
        return _no_literal_password(v, "BILLING_DATABASE_URL")


PAYMENT_KINDS: Final = ("charge", "refund", "chargeback", "chargeback_reversal")
#: What each gateway's settlement files carry when the settings say nothing: Braintree's
#: Transaction Level Fee Report has sales and credits only (disputes come in another report).
DEFAULT_EXPECTED_KINDS: Final[dict[str, tuple[str, ...]]] = {"braintree": ("charge", "refund")}


def _check_cron(v: str) -> str:
    fields = v.split()
    if len(fields) != 5 or not all(re.fullmatch(r"[0-9*/,\-]+", f) for f in fields):
        raise ValueError(f"{v!r} is not a five-field cron expression (e.g. '30 2 * * *')")
    return v


class FeeScheduleSettings(_Model):
    """A gateway's contracted fee on charges, used to flag `fee_variance` exceptions."""

    percent_bps: int = Field(ge=0, le=10_000, description="Basis points of the settled gross.")
    fixed_minor: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Fixed fee per settlement currency, in minor units."
    )
    fx_bps: int = Field(default=0, ge=0, le=10_000, description="Surcharge on converted charges.")
    tolerance_minor: int = Field(
        default=1, ge=0, description="Differences up to this many minor units are not flagged."
    )

    @field_validator("fixed_minor")
    @classmethod
    def _currencies(cls, v: dict[str, int]) -> dict[str, int]:
        from tieout.money import is_known_currency

        bad = [c for c in v if not is_known_currency(c) or c != c.upper()]
        if bad:
            raise ValueError(f"not ISO 4217 currency codes: {', '.join(bad)} (write e.g. USD)")
        return v


class GatewayReconSettings(_Model):
    """Per-gateway overrides under `[reconciliation.gateways.<gateway>]`."""

    settlement_window_days: int | None = Field(
        default=None, ge=0, le=365, description="Overrides reconciliation.settlement_window_days."
    )
    expected_kinds: list[str] | None = Field(
        default=None,
        description="Billing payment kinds this gateway's settlement files carry (default: all; "
        "braintree: charge, refund).",
    )
    fee_schedule: FeeScheduleSettings | None = Field(
        default=None, description="Contracted fees; without one no fee_variance is reported."
    )

    @field_validator("expected_kinds")
    @classmethod
    def _kinds(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            bad = [k for k in v if k not in PAYMENT_KINDS]
            if bad:
                raise ValueError(
                    f"unknown kinds {', '.join(bad)} (valid: {', '.join(PAYMENT_KINDS)})"
                )
        return v


class ReconciliationSettings(_Model):
    """How business days are cut and how billing is tied out against the gateways."""

    finance_timezone: Annotated[str, AfterValidator(_check_timezone)] = Field(
        default="UTC", description="Daily partitions are business days in this IANA time zone."
    )
    settlement_window_days: int = Field(
        default=7,
        ge=0,
        le=365,
        description="A succeeded payment younger than this without a settlement line is pending "
        "(in transit), not missing.",
    )
    suggest_window_days: int = Field(
        default=3, ge=0, le=60, description="Date window for suggested matches without a reference."
    )
    gateways: dict[str, GatewayReconSettings] = Field(
        default_factory=dict, description="Per-gateway overrides (see below)."
    )
    nightly_close_cron: Annotated[str, AfterValidator(_check_cron)] = Field(
        default="30 2 * * *",
        description="When nightly_close runs (cron, in finance_timezone); it closes the day "
        "before.",
    )

    @field_validator("gateways")
    @classmethod
    def _known_gateways(cls, v: dict[str, GatewayReconSettings]) -> dict[str, GatewayReconSettings]:
        known = ("stripe", "adyen", "paypal", "braintree")
        bad = [g for g in v if g not in known]
        if bad:
            raise ValueError(f"unknown gateways {', '.join(bad)} (valid: {', '.join(known)})")
        return v

    def expected_kinds(self, gateway: str) -> tuple[str, ...]:
        override = self.gateways.get(gateway)
        if override is not None and override.expected_kinds is not None:
            return tuple(override.expected_kinds)
        return DEFAULT_EXPECTED_KINDS.get(gateway, PAYMENT_KINDS)


class ChecksSettings(_Model):
    """Thresholds of the data checks (see docs/checks.md)."""

    min_match_rate: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Below this share of payments matched, the reconciliation check fails "
        "(error: blocks posting).",
    )
    warn_match_rate: float = Field(
        default=0.99, ge=0, le=1, description="Below this share the check only warns."
    )
    max_open_age_days: int = Field(
        default=30,
        ge=1,
        description="An open exception older than this without a note is warned about.",
    )
    row_count_drop: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Warn when a partition has fewer than this share of the trailing average rows.",
    )
    trailing_partitions: int = Field(
        default=7, ge=1, le=90, description="How many earlier partitions the average covers."
    )

    @model_validator(mode="after")
    def _order(self) -> ChecksSettings:
        if self.warn_match_rate < self.min_match_rate:
            raise ValueError("warn_match_rate must be at least min_match_rate")
        return self


class ReportsSettings(_Model):
    """Where the reconciliation reports (report.xlsx, report.html, exceptions.csv, summary.json)
    are written."""

    path: str = Field(default="data/reports", description="A local folder or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint; may be ${ENV}."
    )


class LakeSettings(_Model):
    """The Parquet lake the extraction assets write."""

    root: str = Field(
        default="data/lake",
        description="Where Parquet partitions go: a local folder or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (e.g. a local S3 server); may be ${ENV}."
    )


class SettlementsSettings(_Model):
    """Where gateway settlement reports arrive: files under `<path>/<gateway>/...`."""

    path: str = Field(
        default="data/settlements",
        description="A local folder (relative to this file) or s3://bucket/prefix; gateways are "
        "its subfolders stripe/, adyen/, paypal/, braintree/.",
    )
    quarantine: str | None = Field(
        default=None,
        description="Where unreadable files are copied, each with a .error.json sidecar "
        "(default: <path>/_quarantine). A folder or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint (MinIO, a local S3 server); may be ${ENV}.",
    )


class StateSettings(_Model):
    """tieout's own bookkeeping (the processed-file registry): SQLite locally, Postgres in
    production."""

    url: str = Field(
        default="${TIEOUT_STATE_URL:-sqlite:///data/state.db}",
        description="SQLAlchemy URL of the state database; use ${ENV} for anything secret.",
    )
    schema_: Identifier | None = Field(
        default="tieout", alias="schema", description="Postgres schema; ignored by SQLite."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _url_not_literal_secret(cls, v: str) -> str:
        return _no_literal_password(v, "TIEOUT_STATE_URL")


def _env_reference(v: str) -> str:
    if pure_env_reference(v) is None:
        raise ValueError(
            "credentials must come from the environment: write ${NAME} (the value itself "
            "never goes in this file)"
        )
    return v


EnvReference = Annotated[str, AfterValidator(_env_reference)]
_INTERNAL_ID = re.compile(r"^[0-9]{1,18}$")


def _internal_id(v: str) -> str:
    if not _INTERNAL_ID.fullmatch(v):
        raise ValueError(f'{v!r} is not a NetSuite internal id (digits, e.g. "120")')
    return v


InternalId = Annotated[str, AfterValidator(_internal_id)]


def _currency_keys(v: dict[str, str]) -> dict[str, str]:
    from tieout.money import is_known_currency

    bad = [c for c in v if not is_known_currency(c) or c != c.upper()]
    if bad:
        raise ValueError(f"not ISO 4217 currency codes: {', '.join(bad)} (write e.g. USD)")
    return v


class NetSuiteAccounts(_Model):
    """Chart-of-accounts mapping: NetSuite internal ids of the accounts tieout posts to."""

    accounts_receivable: InternalId = Field(description="Debited by invoices (AR).")
    revenue: InternalId = Field(description="Recognized revenue: usage, one-off lines and the "
                                "elapsed part of subscription lines.")  # fmt: skip
    deferred_revenue: InternalId = Field(description="Subscription service beyond the invoice day.")
    tax_payable: InternalId = Field(description="Tax lines of invoices.")
    discounts: InternalId = Field(description="Discount lines (contra revenue).")
    credit_notes: InternalId | None = Field(
        default=None, description="Debited by credit notes (default: revenue)."
    )
    gateway_clearing: InternalId = Field(
        description="AR clearing at the gateway: charges, refunds and chargebacks settle here."
    )
    gateway_fees: InternalId = Field(description="Gateway fees expense.")
    fx_difference: InternalId = Field(
        description="Charges settled in another currency than billed clear here (FX "
        "difference), so the receivable in the billing currency is revalued by finance."
    )
    bank: InternalId = Field(description="The bank account payouts land in.")
    suspense: InternalId = Field(
        description="Lines held back by open exceptions and payout differences wait here "
        "until resolved (the adjusting entry moves them)."
    )
    split_clearing: InternalId | None = Field(
        default=None,
        description="Balances the parts of an entry split above 1,000 lines; nets to zero "
        "over the parts (default: suspense).",
    )


class NetSuiteGateway(_Model):
    """Per-gateway overrides under `[erp.netsuite.gateways.<gateway>]`."""

    bank: InternalId | None = Field(default=None, description="Bank account for this gateway.")
    bank_by_currency: Annotated[dict[str, InternalId], AfterValidator(_currency_keys)] = Field(
        default_factory=dict, description='Bank account per payout currency, e.g. {EUR = "102"}.'
    )
    gateway_clearing: InternalId | None = Field(default=None, description="Clearing account.")
    gateway_fees: InternalId | None = Field(default=None, description="Fees expense account.")
    department: InternalId | None = Field(default=None, description="Department on its lines.")
    class_: InternalId | None = Field(
        default=None, alias="class", description="Class on its lines."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NetSuiteSettings(_Model):
    """Posting journal entries to NetSuite (SuiteTalk SOAP through netsuitesdk)."""

    account: str = Field(
        description="NetSuite account id (e.g. 1234567 or 1234567_SB1); may be ${ENV}."
    )
    consumer_key: EnvReference = Field(
        default="${NETSUITE_CONSUMER_KEY}", description="Token-based auth; an ${ENV} reference."
    )
    consumer_secret: EnvReference = Field(
        default="${NETSUITE_CONSUMER_SECRET}", description="An ${ENV} reference."
    )
    token_key: EnvReference = Field(
        default="${NETSUITE_TOKEN_KEY}", description="An ${ENV} reference."
    )
    token_secret: EnvReference = Field(
        default="${NETSUITE_TOKEN_SECRET}", description="An ${ENV} reference."
    )
    wsdl_url: str | None = Field(
        default=None,
        description="WSDL location: a URL or a local file (cached copy, sandbox); default: "
        "the account's own webservices WSDL. May be ${ENV}.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="SOAP endpoint override (default: the account's data center); may be ${ENV}.",
    )
    wsdl_version: str = Field(default="2023_2", pattern=r"^\d{4}_\d$", description="e.g. 2023_2.")
    concurrency: int = Field(
        default=5, ge=1, le=50,
        description="Requests in flight at once (NetSuite caps concurrent requests per account).",
    )  # fmt: skip
    batch_size: int = Field(
        default=200, ge=1, le=200, description="Records per upsertList request (NetSuite: 200)."
    )
    max_attempts: int = Field(default=6, ge=1, le=20, description="Tries per request.")
    backoff_seconds: float = Field(
        default=1.0, ge=0, le=60, description="First retry delay; doubles, with jitter."
    )
    timeout_seconds: float = Field(default=120, gt=0, le=3600, description="Per request.")
    update_mode: str = Field(
        default="adjust",
        pattern="^(adjust|update)$",
        description="A changed source of a posted entry: `adjust` posts an adjusting entry for "
        "the difference (history stays); `update` rewrites the entry in place (open periods "
        "only).",
    )
    subsidiary: InternalId = Field(description="Default subsidiary internal id.")
    subsidiaries: Annotated[dict[str, InternalId], AfterValidator(_currency_keys)] = Field(
        default_factory=dict, description='Subsidiary per currency, e.g. {EUR = "2"}.'
    )
    currencies: Annotated[dict[str, InternalId], AfterValidator(_currency_keys)] = Field(
        default_factory=lambda: {"USD": "1", "GBP": "2", "CAD": "3", "EUR": "4"},
        description="NetSuite currency internal id per ISO code (NetSuite's defaults: USD 1, "
        "GBP 2, CAD 3, EUR 4).",
    )
    department: InternalId | None = Field(default=None, description="Department on every line.")
    class_: InternalId | None = Field(
        default=None, alias="class", description="Class on every line."
    )
    accounts: NetSuiteAccounts
    gateways: dict[str, NetSuiteGateway] = Field(
        default_factory=dict, description="Per-gateway overrides."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ErpSettings(_Model):
    """Where journal entries are posted."""

    netsuite: NetSuiteSettings | None = Field(
        default=None, description="NetSuite; without it `tieout erp` has nowhere to post."
    )


_SF_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")


def _sf_name(v: str) -> str:
    if not _SF_NAME.fullmatch(v):
        raise ValueError(
            f"{v!r} is not a Salesforce API name (letters, digits and _, e.g. Tieout_Invoice__c)"
        )
    return v


SalesforceName = Annotated[str, AfterValidator(_sf_name)]


def _sf_fields(v: dict[str, str]) -> dict[str, str]:
    for api in v.values():
        if api:  # "" leaves the field out
            _sf_name(api)
    return v


#: What tieout can send for each object (logical name -> default Salesforce field).
SALESFORCE_FIELDS: Final[dict[str, dict[str, str]]] = {
    "accounts": {
        "name": "Name",
        "open_balance": "Tieout_Open_Balance__c",
        "last_payment_date": "Tieout_Last_Payment_Date__c",
        "mrr": "Tieout_MRR__c",
        "currency": "CurrencyIsoCode",
    },
    "invoices": {
        "account": "Tieout_Account__c",
        "invoice_number": "Tieout_Invoice_Number__c",
        "invoice_date": "Tieout_Invoice_Date__c",
        "due_date": "Tieout_Due_Date__c",
        "amount": "Tieout_Amount__c",
        "tax_amount": "Tieout_Tax_Amount__c",
        "amount_paid": "Tieout_Amount_Paid__c",
        "balance": "Tieout_Balance__c",
        "status": "Tieout_Status__c",
        "currency": "CurrencyIsoCode",
    },
    "payments": {
        "account": "Tieout_Account__c",
        "invoice": "Tieout_Invoice__c",
        "payment_date": "Tieout_Payment_Date__c",
        "amount": "Tieout_Amount__c",
        "gateway": "Tieout_Gateway__c",
        "gateway_reference": "Tieout_Gateway_Reference__c",
        "status": "Tieout_Status__c",
        "currency": "CurrencyIsoCode",
    },
    "schedules": {
        "account": "Tieout_Account__c",
        "invoice": "Tieout_Invoice__c",
        "product": "Tieout_Product__c",
        "period_start": "Tieout_Period_Start__c",
        "period_end": "Tieout_Period_End__c",
        "recognized_amount": "Tieout_Recognized_Amount__c",
        "deferred_amount": "Tieout_Deferred_Amount__c",
        "currency": "CurrencyIsoCode",
    },
}
_SF_OBJECT_DEFAULTS: Final = {
    "accounts": ("Account", "Tieout_Customer_Id__c"),
    "invoices": ("Tieout_Invoice__c", "Tieout_External_Id__c"),
    "payments": ("Tieout_Payment__c", "Tieout_External_Id__c"),
    "schedules": ("Tieout_Revenue_Schedule__c", "Tieout_External_Id__c"),
}
SALESFORCE_KINDS: Final = tuple(SALESFORCE_FIELDS)


class SalesforceObject(_Model):
    """One Salesforce object tieout upserts: its API name, external-id field and field map."""

    name: SalesforceName = Field(description="Object API name.")
    external_id_field: SalesforceName = Field(
        description="External-id field holding tieout's deterministic key."
    )
    fields: Annotated[dict[str, str], AfterValidator(_sf_fields)] = Field(
        default_factory=dict,
        description='tieout field -> Salesforce field; merged over the defaults; "" leaves a '
        "field out. Unknown Salesforce fields fail at plan time (describe).",
    )


def _sf_object_default(kind: str) -> SalesforceObject:
    name, ext = _SF_OBJECT_DEFAULTS[kind]
    return SalesforceObject(name=name, external_id_field=ext)


class SalesforceObjects(_Model):
    accounts: SalesforceObject = Field(
        default_factory=lambda: _sf_object_default("accounts"),
        description="Billing status per customer on the Account (external id: customer id).",
    )
    invoices: SalesforceObject = Field(
        default_factory=lambda: _sf_object_default("invoices"), description="Invoices."
    )
    payments: SalesforceObject = Field(
        default_factory=lambda: _sf_object_default("payments"), description="Payments."
    )
    schedules: SalesforceObject = Field(
        default_factory=lambda: _sf_object_default("schedules"),
        description="Revenue schedule rows (one per invoice line per month).",
    )

    def of(self, kind: str) -> SalesforceObject:
        obj: SalesforceObject = getattr(self, kind)
        return obj

    def field_map(self, kind: str) -> dict[str, str]:
        """The effective tieout -> Salesforce field map (defaults, overrides, blanks dropped)."""
        merged = {**SALESFORCE_FIELDS[kind], **self.of(kind).fields}
        return {k: v for k, v in merged.items() if v}


class SalesforceSettings(_Model):
    """Loading revenue schedules and billing status into Salesforce (simple-salesforce)."""

    auth: str = Field(
        default="password", pattern="^(password|jwt)$",
        description="`password` (username, password, security token) or `jwt` (JWT bearer "
        "with a connected app's consumer key and a private key file).",
    )  # fmt: skip
    username: EnvReference = Field(default="${SALESFORCE_USERNAME}", description="${ENV}.")
    password: EnvReference = Field(
        default="${SALESFORCE_PASSWORD}", description="${ENV}; password flow only."
    )
    security_token: EnvReference = Field(
        default="${SALESFORCE_SECURITY_TOKEN}", description="${ENV}; password flow only."
    )
    consumer_key: EnvReference = Field(
        default="${SALESFORCE_CONSUMER_KEY}", description="${ENV}; JWT flow only."
    )
    private_key_file: str = Field(
        default="${SALESFORCE_PRIVATE_KEY_FILE}",
        description="Path of the JWT signing key (JWT flow only); may be ${ENV}.",
    )
    domain: str = Field(
        default="login",
        description='Login domain: "login", "test" (sandboxes) or a My Domain such as '
        '"acme.my"; may be ${ENV}.',
    )
    instance_url: str | None = Field(
        default=None, description="JWT token host override (a My Domain URL); may be ${ENV}."
    )
    ca_bundle: str | None = Field(
        default=None,
        description="CA bundle (PEM) to trust, e.g. behind a TLS-inspecting corporate proxy; "
        "may be ${ENV}.",
    )
    api_version: str = Field(default="59.0", pattern=r"^\d{2}\.0$", description="REST API.")
    send: list[str] = Field(
        default_factory=lambda: list(SALESFORCE_KINDS),
        description="Which objects are sent: accounts, invoices, payments, schedules.",
    )
    objects: SalesforceObjects = Field(default_factory=SalesforceObjects)
    collections_threshold: int = Field(
        default=2000, ge=1, le=1_000_000,
        description="Up to this many records of an object go through sObject Collections "
        "(200 a request); more go through Bulk API 2.0.",
    )  # fmt: skip
    bulk_max_bytes: int = Field(
        default=100_000_000, ge=1_000, le=150_000_000,
        description="Largest CSV upload per Bulk job (Salesforce: 150 MB after base64, so "
        "100 MB of CSV).",
    )  # fmt: skip
    bulk_records_per_job: int = Field(
        default=100_000, ge=1_000, le=10_000_000,
        description="Records per Bulk API 2.0 job (a job's CSV is split further by bytes).",
    )  # fmt: skip
    bulk_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="First Bulk job status poll; doubles to 30 s."
    )
    bulk_timeout_seconds: float = Field(
        default=3600, gt=0, description="Give up waiting for one Bulk job after this long."
    )
    concurrency: int = Field(
        default=4, ge=1, le=25, description="Requests / Bulk jobs in flight at once."
    )
    max_attempts: int = Field(default=6, ge=1, le=20, description="Tries per request.")
    backoff_seconds: float = Field(
        default=1.0, ge=0, le=60, description="First retry delay; doubles, with jitter."
    )
    timeout_seconds: float = Field(default=120, gt=0, le=3600, description="Per request.")

    @field_validator("send")
    @classmethod
    def _known_kinds(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(SALESFORCE_KINDS))
        if unknown:
            raise ValueError(
                f"unknown object(s) {', '.join(unknown)}; choose from {', '.join(SALESFORCE_KINDS)}"
            )
        return v

    @model_validator(mode="after")
    def _fields_known(self) -> SalesforceSettings:
        for kind in SALESFORCE_KINDS:
            unknown = set(self.objects.of(kind).fields) - set(SALESFORCE_FIELDS[kind])
            if unknown:
                raise ValueError(
                    f"objects.{kind}.fields: unknown tieout field(s) "
                    f"{', '.join(sorted(unknown))}; known: {', '.join(SALESFORCE_FIELDS[kind])}"
                )
        return self


class RevenueSettings(_Model):
    """Revenue schedules and where they are loaded."""

    salesforce: SalesforceSettings | None = Field(
        default=None, description="Salesforce; without it `tieout revenue` has nowhere to load."
    )


class Settings(_Model):
    billing: BillingSettings = Field(default_factory=BillingSettings)
    reconciliation: ReconciliationSettings = Field(default_factory=ReconciliationSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    settlements: SettlementsSettings = Field(default_factory=SettlementsSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    reports: ReportsSettings = Field(default_factory=ReportsSettings)
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    erp: ErpSettings = Field(default_factory=ErpSettings)
    revenue: RevenueSettings = Field(default_factory=RevenueSettings)
    #: Directory relative paths (SQLite files, the local lake) are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def billing_url(self) -> str:
        """The resolved billing URL (may hold a secret: never log it)."""
        return absolutize_sqlite_url(resolve_env(self.billing.url, "billing.url"), self.base_dir)

    def lake_root(self) -> str:
        root = resolve_env(self.lake.root, "lake.root")
        if "://" in root:
            return root
        return str((self.base_dir / root).resolve())

    def lake_endpoint(self) -> str | None:
        if self.lake.s3_endpoint_url is None:
            return None
        return resolve_env(self.lake.s3_endpoint_url, "lake.s3_endpoint_url") or None

    def location(self, template: str, key_path: str) -> str:
        """A folder setting resolved: s3:// stays as it is, local paths become absolute."""
        value = resolve_env(template, key_path)
        if "://" in value:
            return value.rstrip("/")
        return str((self.base_dir / value).resolve())

    def settlements_path(self) -> str:
        return self.location(self.settlements.path, "settlements.path")

    def settlements_quarantine(self) -> str:
        if self.settlements.quarantine is None:
            return self.settlements_path() + "/_quarantine"
        return self.location(self.settlements.quarantine, "settlements.quarantine")

    def settlements_endpoint(self) -> str | None:
        if self.settlements.s3_endpoint_url is None:
            return None
        value = resolve_env(self.settlements.s3_endpoint_url, "settlements.s3_endpoint_url")
        return value or None

    def reports_path(self) -> str:
        return self.location(self.reports.path, "reports.path")

    def reports_endpoint(self) -> str | None:
        if self.reports.s3_endpoint_url is None:
            return None
        return resolve_env(self.reports.s3_endpoint_url, "reports.s3_endpoint_url") or None

    def state_url(self) -> str:
        """The resolved state database URL (may hold a secret: never log it)."""
        return absolutize_sqlite_url(resolve_env(self.state.url, "state.url"), self.base_dir)


def absolutize_sqlite_url(url: str, base_dir: Path) -> str:
    """Relative SQLite paths are relative to the settings file, not to wherever a run starts."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rest = url[len(prefix) :]
        path, sep, query = rest.partition("?")
        if path and path != ":memory:":
            return prefix + str((base_dir / path).resolve()) + sep + query
    return url


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; see docs/configuration.md)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def settings_from_mapping(data: dict[str, Any], base_dir: Path, source: str) -> Settings:
    try:
        return Settings.model_validate({**data, "base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def find_settings_file(explicit: str | Path | None = None) -> Path | None:
    """`explicit`, else $TIEOUT_SETTINGS, else ./dagster_project.toml; None means defaults."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"settings file {path} does not exist")
        return path
    env = os.environ.get(SETTINGS_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{SETTINGS_ENV}={env} does not point at a file")
        return path
    here = Path.cwd() / SETTINGS_FILE
    return here if here.is_file() else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate settings; with no file anywhere, the embedded defaults apply."""
    found = find_settings_file(path)
    if found is None:
        return Settings(base_dir=Path.cwd())
    try:
        data = tomllib.loads(found.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{found}: not valid TOML: {exc}") from None
    return settings_from_mapping(data, found.resolve().parent, str(found))


def config_reference() -> str:
    """Markdown reference of every setting, generated from the models so it cannot drift."""
    sections: list[tuple[str, type[BaseModel]]] = [
        ("billing", BillingSettings),
        ("billing.tables.<table>", TableMapping),
        ("reconciliation", ReconciliationSettings),
        ("reconciliation.gateways.<gateway>", GatewayReconSettings),
        ("reconciliation.gateways.<gateway>.fee_schedule", FeeScheduleSettings),
        ("lake", LakeSettings),
        ("settlements", SettlementsSettings),
        ("state", StateSettings),
        ("reports", ReportsSettings),
        ("checks", ChecksSettings),
        ("erp.netsuite", NetSuiteSettings),
        ("erp.netsuite.accounts", NetSuiteAccounts),
        ("erp.netsuite.gateways.<gateway>", NetSuiteGateway),
        ("revenue.salesforce", SalesforceSettings),
        ("revenue.salesforce.objects.<kind>", SalesforceObject),
    ]
    out = ["<!-- generated by `tieout config-reference`; do not edit by hand -->", ""]
    for name, model in sections:
        out += [f"### `[{name}]`", ""]
        doc = (model.__doc__ or "").strip()
        if doc:
            out += [" ".join(doc.split()), ""]
        out += ["| key | default | description |", "|---|---|---|"]
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name
            if info.default_factory is not None:
                default = "(empty)"
            elif info.default is None:
                default = "(none)"
            else:
                default = f"`{info.default}`"
            out.append(f"| `{key}` | {default} | {info.description or ''} |")
        out.append("")
    out += [
        "### Salesforce objects and fields",
        "",
        "`<kind>` is one of accounts, invoices, payments, schedules. Defaults:",
        "",
        "| kind | object | external id field | tieout field -> Salesforce field |",
        "|---|---|---|---|",
    ]
    for kind, fields in SALESFORCE_FIELDS.items():
        name, ext = _SF_OBJECT_DEFAULTS[kind]
        mapped = ", ".join(f"`{k}` -> `{v}`" for k, v in fields.items())
        out.append(f"| {kind} | `{name}` | `{ext}` | {mapped} |")
    out.append("")
    return "\n".join(out)
