"""The records tieout loads into Salesforce and what describe says about their objects: plain
data shared by the record builder (`tieout.revenue.records`), the poster and the connector."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: Canonical JSON (sorted keys, no spaces): the same record always gives the same text.
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class SalesforceRecord:
    """One record to upsert. `values` maps Salesforce field names (or `Rel__r.Ext__c` for a
    parent matched by its external id) to text, "" meaning empty.

    Slotted, with its canonical text and hash cached in slots: a million of them are hashed
    per load, and instance dicts that grow a cache entry cost a third more."""

    kind: str  # accounts | invoices | payments | schedules
    sobject: str
    external_id_field: str
    key: str
    values: Mapping[str, str] = field(default_factory=dict)
    _text: str | None = field(default=None, init=False, repr=False, compare=False)
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def external_id(self) -> str:
        """The ledger's key: unique across objects."""
        return f"{self.sobject}/{self.key}"

    @property
    def base(self) -> str:
        return self.external_id

    def payload(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sobject": self.sobject,
            "external_id_field": self.external_id_field,
            "key": self.key,
            "values": dict(sorted(self.values.items())),
        }

    @property
    def payload_text(self) -> str:
        """The payload as canonical JSON, made once: the hash and the ledger both need it."""
        text = self._text
        if text is None:
            text = _CANONICAL(
                {
                    "external_id_field": self.external_id_field,
                    "key": self.key,
                    "kind": self.kind,
                    "sobject": self.sobject,
                    "values": self.values,
                }
            )
            object.__setattr__(self, "_text", text)
        return text

    def payload_hash(self) -> str:
        digest = self._hash
        if digest is None:
            digest = hashlib.sha256(self.payload_text.encode()).hexdigest()
            object.__setattr__(self, "_hash", digest)
        return digest

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> SalesforceRecord:
        return SalesforceRecord(
            p["kind"], p["sobject"], p["external_id_field"], p["key"], dict(p["values"])
        )

    def collection_json(self) -> dict[str, Any]:
        """The record as sObject Collections wants it (parents as nested references)."""
        out: dict[str, Any] = {
            "attributes": {"type": self.sobject},
            self.external_id_field: self.key,
        }
        for name, value in self.values.items():
            if "." in name:
                rel, ext = name.split(".", 1)
                out[rel] = {ext: value} if value else None
            else:
                out[name] = value if value != "" else None
        return out


@dataclass(frozen=True)
class ObjectShape:
    """What describe says about one object: fields by name, with type and relationship."""

    name: str
    fields: Mapping[str, Mapping[str, Any]]

    def relationship(self, field_name: str) -> str | None:
        spec = self.fields.get(field_name)
        return None if spec is None else spec.get("relationshipName")
