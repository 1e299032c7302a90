"""In-memory records with Salesforce's write rules: match by external id, insert, update.

Records are plain dicts keyed by id, with one dict per external-id field mapping value -> id,
so a million-row Bulk job costs a few dict operations per row. Duplicate external-id values
(only reachable by seeding, as on a real org whose external id is not unique) live in a
separate, normally empty map, so the common path pays one ``if`` for them.

Locking: one re-entrant lock for the whole store, taken once per REST request and once per
Bulk chunk, never per row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tieout.sandbox.salesforce.schema import FieldSpec, ObjectMeta, id_factory, normalize_id

__all__ = ["ObjectStore", "RecordError", "Store", "ValidationRule"]


class RecordError(Exception):
    """A per-record save error, reported in the REST ``errors`` list or Bulk ``sf__Error``."""

    def __init__(self, status_code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.fields = list(fields)

    def as_json(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}

    def bulk_text(self) -> str:
        """Bulk API's ``sf__Error`` format: ``CODE:message:field1,field2 --``."""
        return f"{self.status_code}:{self.message}:{','.join(self.fields)} --"


@dataclass(frozen=True)
class ValidationRule:
    """An injected validation-rule failure for one external-id value."""

    message: str
    fields: tuple[str, ...] = ()

    def error(self) -> RecordError:
        return RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", self.message, self.fields)


class ObjectStore:
    """The records of one object. Callers hold :attr:`Store.lock` around every call."""

    def __init__(self, meta: ObjectMeta, store: Store) -> None:
        self.meta = meta
        self.store = store
        self.by_id: dict[str, dict[str, Any]] = {}
        self.indexes: dict[str, dict[Any, str]] = {name: {} for name in meta.external_ids}
        # external-id field -> value -> every id holding it; only values held more than once.
        self.dups: dict[str, dict[Any, list[str]]] = {name: {} for name in meta.external_ids}
        self.counter = 0
        self._make_id = id_factory(meta.key_prefix)
        self._not_createable = frozenset(n for n, s in meta.fields.items() if not s.createable)
        self._not_updateable = frozenset(n for n, s in meta.fields.items() if not s.updateable)
        self._references = tuple(
            (name, spec.reference_to)
            for name, spec in meta.fields.items()
            if spec.type == "reference" and spec.reference_to
        )
        self._default_name = (
            "Name" in meta.fields
            and meta.fields["Name"].defaulted_on_create
            and meta.fields["Name"].type == "string"
        )

    # ------------------------------------------------------------------ reads

    def primary_key_field(self) -> str:
        """The external-id field records are listed by (the first one), or ``Id``."""
        return self.meta.external_ids[0] if self.meta.external_ids else "Id"

    def find(self, key_field: str, value: Any) -> list[str]:
        """Every id whose ``key_field`` equals ``value`` (0, 1 or, after seeding, more)."""
        if key_field == "Id":
            rid = normalize_id(str(value))
            return [rid] if rid is not None and rid in self.by_id else []
        dups = self.dups[key_field]
        if dups and value in dups:
            return list(dups[value])
        rid = self.indexes[key_field].get(value)
        return [] if rid is None else [rid]

    def match(self, key_field: str, value: Any) -> str | None:
        """The one record an upsert on ``key_field = value`` updates, None to insert."""
        if key_field == "Id":
            rid = normalize_id(str(value))
            if rid is None or rid not in self.by_id:
                raise RecordError(
                    "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"]
                )
            return rid
        dups = self.dups[key_field]
        if dups and value in dups:
            spec = self.meta.fields[key_field]
            raise RecordError(
                "DUPLICATE_EXTERNAL_ID",
                f"{spec.display_label}: more than one record found for external id field: "
                f"[{', '.join(dups[value])}]",
                [key_field],
            )
        return self.indexes[key_field].get(value)

    def parent_id(self, relationship: FieldSpec, parent_key: str, value: Any) -> str:
        """Resolve ``Rel__r.ExtField = value`` to the parent's id, as an upsert does."""
        assert relationship.reference_to is not None
        parent = self.store.objects[relationship.reference_to]
        ids = parent.find(parent_key, value)
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise RecordError(
                "INVALID_FIELD",
                f"Foreign key external ID: {value} not found for field {parent_key} "
                f"in entity {parent.meta.name}",
                [relationship.name],
            )
        # An ambiguous parent key is the same DUPLICATE_EXTERNAL_ID ("a user-specified
        # external ID matches more than one record") as an ambiguous record key, naming the
        # parent's field and the records it matched; ``fields`` is the child's lookup.
        label = parent.meta.fields[parent_key].display_label
        raise RecordError(
            "DUPLICATE_EXTERNAL_ID",
            f"{label}: more than one record found for external id field: [{', '.join(ids)}]",
            [relationship.name],
        )

    # ------------------------------------------------------------------ checks

    def check(self, values: Mapping[str, Any], existing_id: str | None) -> None:
        """Raise the error Salesforce would give saving ``values`` (insert when no id)."""
        locked = self._not_createable if existing_id is None else self._not_updateable
        if not locked.isdisjoint(values):
            name = next(n for n in values if n in locked)
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {name}. Please check the security settings "
                "of this field and verify that it is read/write for your profile or "
                "permission set.",
                [name],
            )
        required = self.meta.required
        if required:
            if existing_id is None:
                missing = [n for n in required if values.get(n) is None]
            else:
                missing = [n for n in required if n in values and values[n] is None]
            if missing:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
        for name, target in self._references:
            ref = values.get(name)
            if ref is not None and ref not in self.store.objects[target].by_id:
                raise RecordError(
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"{self.meta.fields[name].display_label}: id value of incorrect type: {ref}",
                    [name],
                )

    def checker(self, columns: Iterable[str]) -> Callable[[Mapping[str, Any], str | None], None]:
        """:meth:`check` specialised for writes that only ever touch ``columns`` (a Bulk
        header): a no-op when none of its rules can fire, which is the common case."""
        names = frozenset(columns)
        locked = self._not_createable | self._not_updateable
        refs = any(name in names for name, _ in self._references)
        if names.isdisjoint(locked) and not refs and not self.meta.required:
            return _no_check
        return self.check

    # ------------------------------------------------------------------ writes

    def insert(self, values: dict[str, Any], now: datetime, *, nulls: bool = True) -> str:
        """Store ``values`` (taken over, not copied) as a new record and return its id.

        ``nulls=False`` promises no value is None (Bulk knows this per chunk), which skips a
        scan whose ``==`` against Decimals is surprisingly slow.
        """
        self.counter += 1
        rid = self._make_id(self.counter)
        if nulls:
            for name in [n for n, v in values.items() if v is None]:
                del values[name]
        values["Id"] = rid
        values["CreatedDate"] = now
        values["LastModifiedDate"] = now
        if self._default_name and "Name" not in values:
            values["Name"] = rid  # a text Name left out is set to the id, as on Salesforce
        self.by_id[rid] = values
        for name in self.meta.external_ids:
            value = values.get(name)
            if value is not None:
                self._index_add(name, value, rid)
        return rid

    def update(
        self, rid: str, values: Mapping[str, Any], now: datetime, *, nulls: bool = True
    ) -> None:
        """Apply ``values`` to a record; None clears a field (see :meth:`insert` for nulls)."""
        record = self.by_id[rid]
        for name in self.meta.external_ids:
            if name in values:
                old, new = record.get(name), values[name]
                if old is not new and old != new:
                    if old is not None:
                        self._index_remove(name, old, rid)
                    if new is not None:
                        self._index_add(name, new, rid)
        record.update(values)
        if nulls:
            for name in [n for n, v in values.items() if v is None]:
                del record[name]
        record["LastModifiedDate"] = now

    def delete(self, rid: str) -> None:
        record = self.by_id.pop(rid)
        for name in self.meta.external_ids:
            value = record.get(name)
            if value is not None:
                self._index_remove(name, value, rid)

    def _index_add(self, name: str, value: Any, rid: str) -> None:
        index = self.indexes[name]
        first = index.setdefault(value, rid)
        if first != rid:
            held = self.dups[name].setdefault(value, [first])
            held.append(rid)

    def _index_remove(self, name: str, value: Any, rid: str) -> None:
        index, dups = self.indexes[name], self.dups[name]
        held = dups.get(value)
        if held is not None:
            held.remove(rid)
            if len(held) == 1:
                del dups[value]
            index[value] = held[0]
        elif index.get(value) == rid:
            del index[value]


def _no_check(values: Mapping[str, Any], existing_id: str | None) -> None:
    return None


class Store:
    """All objects' records, the lock guarding them, and injected validation-rule failures."""

    def __init__(self, objects: Mapping[str, ObjectMeta]) -> None:
        self.lock = threading.RLock()
        self.objects: dict[str, ObjectStore] = {
            name: ObjectStore(meta, self) for name, meta in objects.items()
        }
        self._by_lower = {name.lower(): name for name in objects}
        # object -> external-id value -> rule; read on every row, so kept a plain dict.
        self.validation_rules: dict[str, dict[str, ValidationRule]] = {}

    def object(self, name: str) -> ObjectStore | None:
        """The object called ``name`` (case-insensitive, as Salesforce treats API names)."""
        canonical = self._by_lower.get(name.lower())
        return None if canonical is None else self.objects[canonical]

    @staticmethod
    def now() -> datetime:
        """The current time at Salesforce's millisecond resolution."""
        now = datetime.now(UTC)
        return now.replace(microsecond=now.microsecond - now.microsecond % 1000)

    def seed(self, sobject: str, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Insert records as given (no checks), duplicates of external ids included."""
        target = self.object(sobject)
        if target is None:
            raise KeyError(f"unknown object {sobject!r}")
        rows = [dict(record) for record in records]
        for row in rows:
            unknown = set(row) - set(target.meta.fields)
            if unknown:
                raise KeyError(f"{target.meta.name} has no field(s) {sorted(unknown)}")
        now = self.now()
        with self.lock:
            return [target.insert(row, now) for row in rows]
