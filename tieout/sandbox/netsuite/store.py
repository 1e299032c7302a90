"""In-memory records of the NetSuite sandbox, with the checks NetSuite applies to journal entries.

Records are plain dicts in the decoded shape of `schema.py` (the same shape a request carries):
attributes `internalId`/`externalId`, fields by element name, references as
`{"internalId": ..., "externalId": ..., "type": ..., "name": ...}` (keys present only when set),
amounts as `Decimal`. A journal entry's lines are `record["lineList"]["line"]`, a list of dicts.

Every record has an externalId (upsert requires one, seeds must give one) and an internalId
assigned per record type in insertion order, so ids are deterministic from run to run.
"""

from __future__ import annotations

import copy
import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, cast

RECORD_TYPES: Final = ("journalEntry", "account", "subsidiary", "currency")
"""RecordType values the sandbox stores (NetSuite's lowerCamel spelling)."""

# Status codes the sandbox answers with; NetSuite's names (platformFaultTyp:StatusDetailCodeType).
CODE_UNBALANCED: Final = "JE_AMOUNTS_MUST_BALANCE"
CODE_INVALID_REF: Final = "INVALID_KEY_OR_REF"
CODE_TOO_MANY_LINES: Final = "EXCEEDED_MAX_TRANS_LINES"
CODE_USER_ERROR: Final = "USER_ERROR"
CODE_NOT_FOUND: Final = "RCRD_DSNT_EXIST"

MAX_JOURNAL_LINES: Final = 1000


class RecordError(Exception):
    """A record NetSuite would refuse: answered as isSuccess="false" for that record only."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- defaults


def _ref(internal_id: str) -> dict[str, str]:
    return {"internalId": internal_id}


DEFAULT_CURRENCIES: Final[tuple[Mapping[str, Any], ...]] = (
    {"externalId": "USD", "name": "US Dollar", "symbol": "USD", "displaySymbol": "$",
     "isBaseCurrency": True, "isInactive": False, "exchangeRate": Decimal("1.0"),
     "currencyPrecision": "_two"},
    {"externalId": "EUR", "name": "Euro", "symbol": "EUR", "displaySymbol": "€",
     "isBaseCurrency": False, "isInactive": False, "exchangeRate": Decimal("1.08"),
     "currencyPrecision": "_two"},
    {"externalId": "GBP", "name": "British Pound", "symbol": "GBP", "displaySymbol": "£",
     "isBaseCurrency": False, "isInactive": False, "exchangeRate": Decimal("1.27"),
     "currencyPrecision": "_two"},
    {"externalId": "JPY", "name": "Japanese Yen", "symbol": "JPY", "displaySymbol": "¥",
     "isBaseCurrency": False, "isInactive": False, "exchangeRate": Decimal("0.0067"),
     "currencyPrecision": "_zero"},
)  # fmt: skip
"""Currencies 1-4: USD (base), EUR, GBP, JPY (no minor unit)."""

DEFAULT_SUBSIDIARIES: Final[tuple[Mapping[str, Any], ...]] = (
    {"externalId": "sub-us", "name": "Tieout Inc.", "legalName": "Tieout Inc.",
     "isInactive": False, "isElimination": False, "currency": _ref("1")},
    {"externalId": "sub-eu", "name": "Tieout Europe B.V.", "legalName": "Tieout Europe B.V.",
     "parent": _ref("1"), "isInactive": False, "isElimination": False, "currency": _ref("2")},
)  # fmt: skip
"""Subsidiaries 1 (US parent, USD) and 2 (EU child, EUR)."""


def _account(
    external_id: str, number: str, name: str, acct_type: str, currency: str | None = None
) -> dict[str, Any]:
    account: dict[str, Any] = {
        "externalId": external_id,
        "acctType": acct_type,
        "acctNumber": number,
        "acctName": name,
        "includeChildren": True,
        "isInactive": False,
        "subsidiaryList": {"recordRef": [_ref("1")]},
    }
    if currency is not None:
        account["currency"] = _ref(currency)
    return account


DEFAULT_ACCOUNTS: Final[tuple[Mapping[str, Any], ...]] = (
    _account("acct-ar", "1100", "Accounts Receivable", "_accountsReceivable"),
    _account("acct-revenue", "4000", "Subscription Revenue", "_income"),
    _account("acct-deferred-revenue", "2400", "Deferred Revenue", "_deferredRevenue"),
    _account("acct-tax-payable", "2200", "Sales Tax Payable", "_otherCurrentLiability"),
    _account("acct-discounts", "4900", "Discounts Given", "_income"),
    _account("acct-bank-usd", "1000", "Operating Bank USD", "_bank", currency="1"),
    _account("acct-bank-eur", "1010", "Operating Bank EUR", "_bank", currency="2"),
    _account("acct-bank-gbp", "1020", "Operating Bank GBP", "_bank", currency="3"),
    _account("acct-bank-jpy", "1030", "Operating Bank JPY", "_bank", currency="4"),
    _account("acct-gateway-fees", "6100", "Payment Gateway Fees", "_expense"),
    _account("acct-clearing", "1200", "Payment Gateway Clearing", "_otherCurrentAsset"),
    _account("acct-fx-gain-loss", "7100", "Realized FX Gain/Loss", "_otherExpense"),
)
"""Accounts 1-12, all available to both subsidiaries (subsidiary 1 with children)."""


# --------------------------------------------------------------------------- store

_ATOMS: Final = (str, int, float, Decimal, date, type(None))  # immutable (bool is an int)
#: Record types kept pickled: journal entries are the many, and as dicts their tens of
#: thousands of nested containers were walked by Python's garbage collector again and again
#: (a third of the sandbox's CPU while a benchmark posted 20,000); as bytes they are not.
_PACKED: Final = frozenset({"journalEntry"})


def _copy(value: Any) -> Any:
    """A deep copy of a decoded-shape value: dicts and lists are copied, immutable scalars
    shared; anything else goes through `copy.deepcopy`. Same result, a fraction of the cost
    (records are copied on every write and read)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, _ATOMS):
        return value
    return copy.deepcopy(value)


_CLOCK: list[tuple[int, str]] = [(0, "")]


def _now() -> str:
    """The current second as NetSuite writes it (made once a second: a list request stamps
    200 records)."""
    second, text = _CLOCK[0]
    now = int(time.time())
    if now != second:
        text = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        _CLOCK[0] = (now, text)
    return text


@dataclass(frozen=True)
class UpsertResult:
    internal_id: str
    created: bool


class RecordStore:
    """Records by type, indexed by internalId and externalId; all access under one lock.

    Callers that validate and then write (an upsert checking its account references) hold
    `store.locked()` around both, so a concurrent write cannot slip in between.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        #: Records by type and internalId: dicts, or pickled (`_PACKED` types).
        self._by_id: dict[str, dict[str, Any]] = {t: {} for t in RECORD_TYPES}
        self._by_external: dict[str, dict[str, str]] = {t: {} for t in RECORD_TYPES}
        self._next_id: dict[str, int] = dict.fromkeys(RECORD_TYPES, 1)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def clear(self) -> None:
        with self._lock:
            for record_type in RECORD_TYPES:
                self._by_id[record_type].clear()
                self._by_external[record_type].clear()
                self._next_id[record_type] = 1

    def upsert(
        self, record_type: str, fields: Mapping[str, Any], *, owned: bool = False
    ) -> UpsertResult:
        """Insert a new externalId, or replace the fields of the record that has it.

        The internalId (and a journal entry's createdDate and tranId) survive an update.
        An explicit `internalId` is honoured for new records (seeding real-looking ids).
        `owned=True`: `fields` is a dict no one else holds (e.g. fresh from
        `normalize_journal_entry`), stored as it is instead of copied.
        """
        external_id = fields.get("externalId")
        if not external_id:
            raise RecordError(CODE_USER_ERROR, "Upsert requires an externalId.")
        with self._lock:
            table = self._by_id[record_type]
            existing_id = self._by_external[record_type].get(external_id)
            record = fields if owned and isinstance(fields, dict) else _copy(dict(fields))
            if existing_id is not None:
                old = self._unpack(record_type, table[existing_id])
                record["internalId"] = existing_id
                for kept in ("createdDate", "tranId"):
                    if kept in old and kept not in record:
                        record[kept] = old[kept]
            else:
                wanted = record.get("internalId")
                if wanted is not None and str(wanted) in table:
                    raise RecordError(CODE_USER_ERROR, f"internalId {wanted} is already taken.")
                internal_id = str(wanted) if wanted is not None else str(self._next_id[record_type])
                self._next_id[record_type] = max(self._next_id[record_type], int(internal_id) + 1)
                record["internalId"] = internal_id
            if record_type == "journalEntry":
                now = _now()
                record.setdefault("createdDate", now)
                record["lastModifiedDate"] = now
                record.setdefault("tranId", f"JE{record['internalId']}")
            table[record["internalId"]] = (
                pickle.dumps(record, pickle.HIGHEST_PROTOCOL) if record_type in _PACKED else record
            )
            self._by_external[record_type][external_id] = record["internalId"]
            return UpsertResult(record["internalId"], created=existing_id is None)

    def get(
        self, record_type: str, *, internal_id: str | None = None, external_id: str | None = None
    ) -> dict[str, Any] | None:
        """A copy of one record, found by internalId (preferred) or externalId."""
        with self._lock:
            found = self._find(record_type, internal_id, external_id)
            if found is None or record_type in _PACKED:  # unpickled: a copy already
                return found
            copied: dict[str, Any] = _copy(found)
            return copied

    def _find(
        self, record_type: str, internal_id: str | None, external_id: str | None
    ) -> dict[str, Any] | None:
        key = str(internal_id) if internal_id is not None else None
        if key is None and external_id is not None:
            key = self._by_external[record_type].get(external_id)
        stored = self._by_id[record_type].get(key) if key is not None else None
        return None if stored is None else self._unpack(record_type, stored)

    @staticmethod
    def _unpack(record_type: str, stored: Any) -> dict[str, Any]:
        """A stored record as a dict (for a packed type, a new one)."""
        if record_type in _PACKED:
            record: dict[str, Any] = pickle.loads(stored)  # bytes this store pickled itself
            return record
        return cast(dict[str, Any], stored)

    def _copies(self, record_type: str, keys: Iterable[str]) -> list[dict[str, Any]]:
        table = self._by_id[record_type]
        if record_type in _PACKED:
            return [self._unpack(record_type, table[k]) for k in keys]
        return [_copy(table[k]) for k in keys]

    def all(self, record_type: str) -> list[dict[str, Any]]:
        """Copies of every record of a type, in internalId order."""
        with self._lock:
            return self._copies(record_type, sorted(self._by_id[record_type], key=int))

    def by_external_id(self, record_type: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            pairs = sorted(self._by_external[record_type].items(), key=lambda kv: int(kv[1]))
            copies = self._copies(record_type, [iid for _, iid in pairs])
            return {ext: record for (ext, _), record in zip(pairs, copies, strict=True)}

    def resolve(self, record_type: str, ref: Mapping[str, Any]) -> dict[str, Any] | None:
        """The record a RecordRef points at (internalId wins over externalId), or None."""
        with self._lock:
            return self._find(record_type, ref.get("internalId"), ref.get("externalId"))

    def seed(self, record_type: str, records: Iterable[Mapping[str, Any]]) -> list[str]:
        return [self.upsert(record_type, r).internal_id for r in records]


# --------------------------------------------------------------------------- validation


def _ref_key(ref: Mapping[str, Any]) -> str:
    return str(ref.get("internalId") or ref.get("externalId") or "")


def _short_ref(record: Mapping[str, Any], name: str) -> dict[str, str]:
    """A reference the way NetSuite returns one: internalId plus the display name."""
    return {"internalId": record["internalId"], "name": name}


def _account_name(account: Mapping[str, Any]) -> str:
    return " ".join(str(account[k]) for k in ("acctNumber", "acctName") if account.get(k))


def _subsidiary_lineage(store: RecordStore, subsidiary: Mapping[str, Any]) -> list[str]:
    """internalIds of a subsidiary and all its parents (an account "with children" of a
    parent is available to the child)."""
    lineage = [subsidiary["internalId"]]
    current: Mapping[str, Any] | None = subsidiary
    while current is not None and current.get("parent"):
        current = store.resolve("subsidiary", current["parent"])
        if current is None or current["internalId"] in lineage:
            break
        lineage.append(current["internalId"])
    return lineage


def _account_available(
    account: Mapping[str, Any], subsidiary_id: str, lineage: Sequence[str]
) -> bool:
    refs = (account.get("subsidiaryList") or {}).get("recordRef") or []
    allowed = [str(r.get("internalId")) for r in refs]
    if not allowed or subsidiary_id in allowed:
        return True
    return bool(account.get("includeChildren")) and any(p in allowed for p in lineage[1:])


class References:
    """What a list request's journal entries refer to, looked up once for the request.

    The store stays locked for a whole list (see `NetSuiteSandbox._upsert_all`), so no
    account, subsidiary or currency changes within it, and its 200 entries name the same few
    again and again: looked up, copied and checked per line, they were a third of the
    sandbox's work on a request."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._found: dict[tuple[str, Any, Any], dict[str, Any] | None] = {}
        self._lineages: dict[str, list[str]] = {}
        self._accounts: dict[tuple[Any, Any, str], dict[str, str] | None] = {}

    def forget(self) -> None:
        """A record other than a journal entry was written: what it may change is looked
        up again."""
        self._found.clear()
        self._lineages.clear()
        self._accounts.clear()

    def resolve(self, record_type: str, ref: Mapping[str, Any]) -> dict[str, Any] | None:
        """`RecordStore.resolve`, remembered (callers do not change what it returns)."""
        key = (record_type, ref.get("internalId"), ref.get("externalId"))
        if key not in self._found:
            self._found[key] = self._store.resolve(record_type, ref)
        return self._found[key]

    def lineage(self, subsidiary: Mapping[str, Any]) -> list[str]:
        key = subsidiary["internalId"]
        if key not in self._lineages:
            self._lineages[key] = _subsidiary_lineage(self._store, subsidiary)
        return self._lineages[key]

    def account(
        self, account_ref: Mapping[str, Any], sub_id: str, lineage: Sequence[str]
    ) -> dict[str, str] | None:
        """The line's account reference as stored, or None when the account does not exist,
        is inactive or is not available to the subsidiary."""
        key = (account_ref.get("internalId"), account_ref.get("externalId"), sub_id)
        if key not in self._accounts:
            account = self.resolve("account", account_ref)
            usable = (
                account is not None
                and not account.get("isInactive")
                and _account_available(account, sub_id, lineage)
            )
            self._accounts[key] = (
                _short_ref(account, _account_name(account)) if account and usable else None
            )
        short = self._accounts[key]
        return None if short is None else dict(short)


def normalize_journal_entry(
    store: RecordStore,
    fields: Mapping[str, Any],
    *,
    max_lines: int = MAX_JOURNAL_LINES,
    owned: bool = False,
    references: References | None = None,
) -> dict[str, Any]:
    """Check a journal entry like NetSuite does and return it as it will be stored.

    Raises `RecordError` with NetSuite's code for: no lines, too many lines, missing or
    unknown subsidiary / currency / account, an account not available to the subsidiary,
    and debits that do not equal credits. Amounts are rounded to the currency's precision
    (NetSuite stores JPY without decimals) before the balance check. Call under
    `store.locked()` together with the write. `owned`: `fields` (and what it holds) was
    made for this call (a decoded request) and may become the record itself, uncopied
    (copying 200 entries' lines cost a few milliseconds a request). `references`: the
    lookups of the other entries of the same locked list request, shared.
    """
    refs = references if references is not None else References(store)
    record: dict[str, Any] = dict(fields) if owned else _copy(dict(fields))
    lines: list[dict[str, Any]] = list((record.get("lineList") or {}).get("line") or [])
    if not lines:
        raise RecordError(
            CODE_USER_ERROR, "You must enter at least one line item for this transaction."
        )
    if len(lines) > max_lines:
        raise RecordError(
            CODE_TOO_MANY_LINES,
            f"A journal entry can have at most {max_lines} lines; this one has {len(lines)}.",
        )

    sub_ref = record.get("subsidiary")
    if not sub_ref:
        raise RecordError(CODE_USER_ERROR, "Please enter value(s) for: Subsidiary")
    subsidiary = refs.resolve("subsidiary", sub_ref)
    if subsidiary is None or subsidiary.get("isInactive"):
        raise RecordError(
            CODE_INVALID_REF, f"Invalid subsidiary reference key {_ref_key(sub_ref)}."
        )
    sub_id = subsidiary["internalId"]
    record["subsidiary"] = _short_ref(subsidiary, subsidiary.get("name", ""))

    currency_ref = record.get("currency") or subsidiary.get("currency")
    currency = refs.resolve("currency", currency_ref) if currency_ref else None
    if currency is None or currency.get("isInactive"):
        key = _ref_key(currency_ref or {})
        raise RecordError(
            CODE_INVALID_REF, f"Invalid currency reference key {key} for subsidiary {sub_id}."
        )
    record["currency"] = _short_ref(currency, currency.get("name", ""))
    places = 0 if currency.get("currencyPrecision") == "_zero" else 2
    quantum = Decimal(1).scaleb(-places)

    lineage = refs.lineage(subsidiary)
    debits = credits = Decimal(0)
    for line in lines:
        account_ref = line.get("account")
        if not account_ref:
            raise RecordError(CODE_USER_ERROR, "Please enter value(s) for: Account")
        account = refs.account(account_ref, sub_id, lineage)
        if account is None:
            raise RecordError(
                CODE_INVALID_REF,
                f"Invalid account reference key {_ref_key(account_ref)} for subsidiary {sub_id}.",
            )
        line["account"] = account
        for side in ("debit", "credit"):
            amount = line.get(side)
            if amount is not None:
                if type(amount) is not Decimal:
                    amount = Decimal(amount)
                line[side] = amount.quantize(quantum, rounding=ROUND_HALF_UP)
        debits += line.get("debit") or 0
        credits += line.get("credit") or 0
    if debits != credits:
        raise RecordError(
            CODE_UNBALANCED,
            f"The total debits ({debits}) must equal the total credits ({credits}).",
        )
    record["lineList"] = {"line": lines}
    return record
