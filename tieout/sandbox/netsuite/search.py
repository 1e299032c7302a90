"""Basic-search criteria evaluated against stored records, the way SuiteTalk reads them.

Only the fields declared in the sandbox's `platform.common.xsd` exist; each one is mapped
here to the stored value it filters on. String criteria compare case-insensitively, as
NetSuite does. An operator the sandbox does not implement is a SOAP fault, never a silent
"match everything".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from tieout.sandbox.netsuite.soap import unsupported

Record = Mapping[str, Any]


def _ids(*refs: Any) -> set[str]:
    return {str(r["internalId"]) for r in refs if isinstance(r, Mapping) and r.get("internalId")}


def _external(record: Record) -> set[str]:
    return {record["externalId"]} if record.get("externalId") else set()


def _internal(record: Record) -> set[str]:
    return {str(record["internalId"])}


def _subsidiaries(record: Record) -> set[str]:
    return _ids(*((record.get("subsidiaryList") or {}).get("recordRef") or []))


def _line_accounts(record: Record) -> set[str]:
    return _ids(*(line.get("account") for line in (record.get("lineList") or {}).get("line") or []))


# Field kinds: how a criterion of that search-field type is evaluated.
MULTI: Final = "multi"  # SearchMultiSelectField: RecordRefs, anyOf / noneOf
ENUM: Final = "enum"  # SearchEnumMultiSelectField: strings, anyOf / noneOf
STRING: Final = "string"  # SearchStringField
LONG: Final = "long"  # SearchLongField
BOOLEAN: Final = "boolean"  # SearchBooleanField
IGNORED: Final = "ignored"  # accepted, no effect (mainLine: the sandbox returns records)

Field = tuple[str, Callable[[Record], Any]]

_COMMON: Final[dict[str, Field]] = {
    "internalId": (MULTI, _internal),
    "internalIdNumber": (LONG, lambda r: int(r["internalId"])),
    "externalIdString": (STRING, lambda r: r.get("externalId")),
    "isInactive": (BOOLEAN, lambda r: bool(r.get("isInactive", False))),
}

FIELDS: Final[dict[str, dict[str, Field]]] = {
    "account": {
        **_COMMON,
        "name": (STRING, lambda r: r.get("acctName")),
        "number": (STRING, lambda r: r.get("acctNumber")),
        "subsidiary": (MULTI, _subsidiaries),
        "type": (ENUM, lambda r: r.get("acctType")),
    },
    "subsidiary": {
        **_COMMON,
        "currency": (MULTI, lambda r: _ids(r.get("currency"))),
        "isElimination": (BOOLEAN, lambda r: bool(r.get("isElimination", False))),
        "name": (STRING, lambda r: r.get("name")),
    },
    "journalEntry": {
        **{k: v for k, v in _COMMON.items() if k != "isInactive"},
        "account": (MULTI, _line_accounts),
        "currency": (MULTI, lambda r: _ids(r.get("currency"))),
        "mainLine": (IGNORED, lambda r: None),
        "memo": (STRING, lambda r: r.get("memo")),
        "recordType": (STRING, lambda r: "journalEntry"),
        "subsidiary": (MULTI, lambda r: _ids(r.get("subsidiary"))),
        "tranId": (STRING, lambda r: r.get("tranId")),
        "type": (ENUM, lambda r: "_journal"),
    },
}


def matches(record_type: str, record: Record, criteria: Mapping[str, Any]) -> bool:
    """Whether a stored record satisfies every criterion of a basic search."""
    fields = FIELDS[record_type]
    for name, criterion in criteria.items():
        if name == "externalId":
            # Matched on the RecordRefs' externalId attribute, as NetSuite does.
            wanted = {r.get("externalId") for r in criterion.get("searchValue") or []}
            if not _multi(criterion, _external(record), wanted, name):
                return False
            continue
        if name not in fields:
            raise unsupported(f"search field {name!r} for {record_type}")
        kind, read = fields[name]
        value = read(record)
        if kind == MULTI:
            refs = criterion.get("searchValue") or []
            if any(not r.get("internalId") for r in refs):
                raise unsupported(f"{name!r} search values without an internalId")
            ok = _multi(criterion, value, _ids(*refs), name)
        elif kind == ENUM:
            ok = _multi(
                criterion,
                {value} if value else set(),
                set(criterion.get("searchValue") or []),
                name,
            )
        elif kind == STRING:
            ok = _string(criterion, value, name)
        elif kind == LONG:
            ok = _long(criterion, value, name)
        elif kind == BOOLEAN:
            ok = criterion.get("searchValue") is None or value == criterion["searchValue"]
        else:
            ok = True
        if not ok:
            return False
    return True


def _multi(criterion: Mapping[str, Any], have: set[Any], wanted: set[Any], name: str) -> bool:
    operator = str(criterion.get("operator", "anyOf"))
    if operator == "anyOf":
        return bool(have & wanted)
    if operator == "noneOf":
        return not have & wanted
    raise unsupported(f"operator {operator!r} on {name!r}")


def _string(criterion: Mapping[str, Any], value: Any, name: str) -> bool:
    operator = str(criterion.get("operator", "is"))
    text = (value or "").casefold() if isinstance(value, str) or value is None else str(value)
    wanted = (criterion.get("searchValue") or "").casefold()
    checks: dict[str, Callable[[], bool]] = {
        "is": lambda: text == wanted,
        "isNot": lambda: text != wanted,
        "contains": lambda: wanted in text,
        "doesNotContain": lambda: wanted not in text,
        "startsWith": lambda: text.startswith(wanted),
        "doesNotStartWith": lambda: not text.startswith(wanted),
        "empty": lambda: not text,
        "notEmpty": lambda: bool(text),
        "hasKeywords": lambda: all(word in text for word in wanted.split()),
    }
    if operator not in checks:
        raise unsupported(f"operator {operator!r} on {name!r}")
    return checks[operator]()


def _long(criterion: Mapping[str, Any], value: int, name: str) -> bool:
    operator = str(criterion.get("operator", "equalTo"))
    first, second = criterion.get("searchValue"), criterion.get("searchValue2")
    if operator in ("empty", "notEmpty"):
        return operator == "notEmpty"
    if first is None or (operator == "between" and second is None):
        raise unsupported(f"{operator!r} on {name!r} without a search value")
    checks: dict[str, Callable[[], bool]] = {
        "equalTo": lambda: value == first,
        "notEqualTo": lambda: value != first,
        "greaterThan": lambda: value > first,
        "greaterThanOrEqualTo": lambda: value >= first,
        "lessThan": lambda: value < first,
        "lessThanOrEqualTo": lambda: value <= first,
        "between": lambda: second is not None and first <= value <= second,
    }
    if operator not in checks:
        raise unsupported(f"operator {operator!r} on {name!r}")
    return checks[operator]()
