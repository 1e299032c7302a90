"""REST payloads: errors, record JSON, and sObject Collections upsert with Salesforce's rules.

Collections upsert follows the documented contract: at most 200 records; unknown fields and
unreadable values fail the whole request (HTTP 400, as JSON deserialization does on
Salesforce); everything else is a per-record error, and ``allOrNone`` rolls back all records
when any fails.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tieout.sandbox.salesforce.schema import FieldError, FieldSpec, format_datetime
from tieout.sandbox.salesforce.store import ObjectStore, RecordError

__all__ = [
    "MAX_COLLECTION_RECORDS",
    "ApiError",
    "collections_upsert",
    "dumps",
    "record_json",
]

MAX_COLLECTION_RECORDS = 200


class ApiError(Exception):
    """A request-level error: HTTP status plus Salesforce's ``[{message, errorCode}]`` body."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            error["fields"] = self.fields
        return [error]


def not_found(message: str = "The requested resource does not exist") -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)  # Salesforce's JSON carries numbers; 18 digits fit a double's repr
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(payload: object) -> bytes:
    return json.dumps(payload, default=_default, separators=(",", ":")).encode()


def record_json(target: ObjectStore, record: dict[str, Any], version: str) -> dict[str, Any]:
    """A record as ``GET /sobjects/{object}/{id}`` returns it: every field, nulls included."""
    meta = target.meta
    out: dict[str, Any] = {
        "attributes": {
            "type": meta.name,
            "url": f"/services/data/v{version}/sobjects/{meta.name}/{record['Id']}",
        }
    }
    for name in meta.fields:
        out[name] = record.get(name)
    out["IsDeleted"] = False
    out["SystemModstamp"] = record.get("LastModifiedDate")
    return out


# --------------------------------------------------------------------------- collections


def _json_value(spec: FieldSpec, convert: Any, value: object) -> Any:
    """A JSON value as the field stores it; FieldError(parse=True) when it cannot be read."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        if spec.type == "boolean":
            return value
    elif isinstance(value, (int, Decimal)):
        if spec.type not in ("boolean", "date", "datetime"):
            return convert(str(value))
    elif isinstance(value, str):
        return convert(value)
    raise FieldError("JSON_PARSER_ERROR", f"{value!r}", [spec.name], parse=True)


@dataclass
class _Pending:
    values: dict[str, Any]
    parents: list[tuple[FieldSpec, str, Any]]
    key: Any
    error: RecordError | None = None
    existing: str | None = None


def _parse_record(target: ObjectStore, key_field: str, record: object, position: int) -> _Pending:
    meta = target.meta
    if not isinstance(record, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", f"Record {position} is not a JSON object")
    attributes = record.get("attributes")
    record_type = attributes.get("type") if isinstance(attributes, dict) else None
    if not isinstance(record_type, str) or not record_type:
        raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
    if record_type.lower() != meta.name.lower():
        raise ApiError(
            400,
            "INVALID_TYPE",
            f"Records of type {record_type} cannot be upserted into the {meta.name} collection",
        )
    pending = _Pending(values={}, parents=[], key=None)
    for name, value in record.items():
        if name == "attributes":
            continue
        spec = meta.by_lower.get(name.lower())
        if spec is None:
            rel = meta.relationships.get(name.lower())
            if rel is not None and rel.reference_to and isinstance(value, dict):
                keys = [k for k in value if k != "attributes"]
                parent_meta = target.store.objects[rel.reference_to].meta
                parent_spec = parent_meta.by_lower.get(keys[0].lower()) if len(keys) == 1 else None
                if parent_spec is None or not (parent_spec.external_id or parent_spec.name == "Id"):
                    raise ApiError(
                        400,
                        "INVALID_FIELD",
                        f"Foreign key external ID reference on {rel.relationship_name} must "
                        "name exactly one external ID field",
                    )
                pending.parents.append((rel, parent_spec.name, value[keys[0]]))
                continue
            raise ApiError(
                400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {meta.name}"
            )
        try:
            pending.values[spec.name] = _json_value(spec, meta.converters[spec.name], value)
        except FieldError as exc:
            if exc.parse:
                raise ApiError(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {spec.type} from value {value!r} for "
                    f"field {spec.name} at record {position}",
                ) from None
            if pending.error is None:
                pending.error = RecordError(exc.status_code, exc.message, exc.fields)
    pending.key = pending.values.get(key_field)
    if pending.key is None and pending.error is None:
        pending.error = RecordError("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])
    return pending


def collections_upsert(
    target: ObjectStore, key_field_name: str, payload: object
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Upsert a Collections payload; returns the per-record results and row counts.

    Takes :attr:`Store.lock` for the whole request, so a request is atomic with respect
    to Bulk chunks and other requests (which is what makes ``allOrNone`` simple).
    """
    meta = target.meta
    key_spec = meta.by_lower.get(key_field_name.lower())
    if key_spec is None or not key_spec.external_id:
        raise not_found(
            f"Provided external ID field does not exist or is not accessible: {key_field_name}"
        )
    key_field = key_spec.name
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body must contain a records list")
    all_or_none = payload.get("allOrNone", False)
    if not isinstance(all_or_none, bool):
        raise ApiError(400, "JSON_PARSER_ERROR", "allOrNone must be true or false")
    records: list[object] = payload["records"]
    if len(records) > MAX_COLLECTION_RECORDS:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )
    pendings = [_parse_record(target, key_field, rec, n) for n, rec in enumerate(records)]
    key_counts = Counter(p.key for p in pendings if p.key is not None)
    repeated = {key for key, n in key_counts.items() if n > 1}

    store = target.store
    rules = store.validation_rules.get(meta.name, {})
    counts = {"created": 0, "updated": 0, "failed": 0}
    with store.lock:
        for pending in pendings:
            if pending.error is not None:
                continue
            try:
                if pending.key in repeated:
                    raise RecordError(
                        "DUPLICATE_VALUE", f"Duplicate external id specified: {pending.key}"
                    )
                for rel, parent_field, value in pending.parents:
                    pending.values[rel.name] = target.parent_id(rel, parent_field, value)
                pending.existing = target.match(key_field, pending.key)
                rule = rules.get(pending.key)
                if rule is not None:
                    raise rule.error()
                target.check(pending.values, pending.existing)
            except RecordError as exc:
                pending.error = exc
        any_failed = any(p.error is not None for p in pendings)
        now = store.now()
        results: list[dict[str, Any]] = []
        for pending in pendings:
            if pending.error is not None:
                results.append({"success": False, "errors": [pending.error.as_json()]})
                counts["failed"] += 1
            elif all_or_none and any_failed:
                rolled_back = RecordError(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request "
                    "was using AllOrNone header",
                )
                results.append({"success": False, "errors": [rolled_back.as_json()]})
                counts["failed"] += 1
            elif pending.existing is None:
                rid = target.insert(pending.values, now)
                results.append({"id": rid, "success": True, "errors": [], "created": True})
                counts["created"] += 1
            else:
                target.update(pending.existing, pending.values, now)
                results.append(
                    {"id": pending.existing, "success": True, "errors": [], "created": False}
                )
                counts["updated"] += 1
    return results, counts
