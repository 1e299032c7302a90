"""The sandbox's object schema: field specs, the tieout defaults, describe output, value rules.

Values arriving over the wire are checked the way Salesforce checks them (lengths, numeric
precision/scale, restricted picklists, dates) so a connector that would be rejected by a real
org is rejected here too. Stored values are typed: ``Decimal`` for currency/double/percent
(rounded half-up to the field's scale, as Salesforce does on save; never ``float``, matching
tieout's money rules), ``date``/``datetime``, ``bool``, ``int``, ``str``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from tieout.money import CURRENCY_EXPONENTS

__all__ = [
    "FAST_PATH_ERRORS",
    "ColumnConverter",
    "Converter",
    "FieldError",
    "FieldSpec",
    "FieldType",
    "ObjectMeta",
    "build_objects",
    "default_schema",
    "format_datetime",
    "id_checksum",
    "id_factory",
    "normalize_id",
]

FieldType = Literal[
    "id",
    "string",
    "textarea",
    "email",
    "phone",
    "url",
    "picklist",
    "currency",
    "double",
    "percent",
    "int",
    "date",
    "datetime",
    "boolean",
    "reference",
]

_SOAP_TYPES: dict[str, str] = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "currency": "xsd:double",
    "double": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "boolean": "xsd:boolean",
}
_NUMERIC = frozenset({"currency", "double", "percent"})
_TEXT = frozenset({"string", "textarea", "email", "phone", "url", "picklist"})


@dataclass(frozen=True)
class FieldSpec:
    """One field as the sandbox's describe reports it and as writes are checked against it."""

    name: str
    type: FieldType
    label: str | None = None
    length: int = 0
    precision: int = 0
    scale: int = 0
    external_id: bool = False
    unique: bool = False
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    reference_to: str | None = None
    relationship_name: str | None = None
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False

    @property
    def display_label(self) -> str:
        if self.label:
            return self.label
        base = self.name.removesuffix("__c").removeprefix("Tieout_")
        return base.replace("_", " ")


def _text(name: str, length: int = 255, **kw: Any) -> FieldSpec:
    return FieldSpec(name, "string", length=length, **kw)


def _money(name: str) -> FieldSpec:
    return FieldSpec(name, "currency", precision=18, scale=2)


def _date(name: str) -> FieldSpec:
    return FieldSpec(name, "date")


def _ref(name: str, to: str) -> FieldSpec:
    return FieldSpec(
        name, "reference", length=18, reference_to=to, relationship_name=name[:-3] + "__r"
    )


_CURRENCY_CODE = FieldSpec(
    "CurrencyIsoCode",
    "picklist",
    label="Currency ISO Code",
    length=3,
    picklist_values=tuple(sorted(CURRENCY_EXPONENTS)),
    restricted_picklist=True,
)
_EXT = FieldSpec(
    "Tieout_External_Id__c", "string", label="Tieout External Id", length=255, external_id=True
)


def default_schema() -> dict[str, list[FieldSpec]]:
    """A fresh copy of tieout's revenue objects; callers may add fields or objects to it.

    System fields (Id, CreatedDate, ...) and a text ``Name`` are added automatically when an
    object leaves them out, so a custom schema only needs its business fields.
    """
    return {
        "Account": [
            _text("Name", 255, label="Account Name", nillable=False),
            _text("AccountNumber", 40, label="Account Number"),
            _text("BillingCountry", 80, label="Billing Country"),
            FieldSpec(
                "Tieout_Customer_Id__c",
                "string",
                label="Tieout Customer Id",
                length=64,
                external_id=True,
            ),
            _money("Tieout_Open_Balance__c"),
            _date("Tieout_Last_Payment_Date__c"),
            FieldSpec("Tieout_MRR__c", "currency", label="MRR", precision=18, scale=2),
            _CURRENCY_CODE,
        ],
        "Tieout_Invoice__c": [
            _EXT,
            _ref("Tieout_Account__c", "Account"),
            _text("Tieout_Invoice_Number__c", 80),
            _date("Tieout_Invoice_Date__c"),
            _date("Tieout_Due_Date__c"),
            _money("Tieout_Amount__c"),
            _money("Tieout_Tax_Amount__c"),
            _money("Tieout_Amount_Paid__c"),
            _money("Tieout_Balance__c"),
            FieldSpec(
                "Tieout_Status__c",
                "picklist",
                length=40,
                picklist_values=("Draft", "Open", "Paid", "Void", "Uncollectible"),
            ),
            _CURRENCY_CODE,
        ],
        "Tieout_Payment__c": [
            _EXT,
            _ref("Tieout_Account__c", "Account"),
            _ref("Tieout_Invoice__c", "Tieout_Invoice__c"),
            _date("Tieout_Payment_Date__c"),
            _money("Tieout_Amount__c"),
            _money("Tieout_Fee_Amount__c"),
            _money("Tieout_Net_Amount__c"),
            _text("Tieout_Gateway__c", 40),
            _text("Tieout_Gateway_Reference__c", 255),
            FieldSpec(
                "Tieout_Status__c",
                "picklist",
                length=40,
                picklist_values=("Succeeded", "Refunded", "Failed", "Disputed"),
            ),
            _CURRENCY_CODE,
        ],
        "Tieout_Revenue_Schedule__c": [
            _EXT,
            _ref("Tieout_Account__c", "Account"),
            _ref("Tieout_Invoice__c", "Tieout_Invoice__c"),
            _text("Tieout_Product__c", 255),
            _date("Tieout_Period_Start__c"),
            _date("Tieout_Period_End__c"),
            _money("Tieout_Recognized_Amount__c"),
            _money("Tieout_Deferred_Amount__c"),
            FieldSpec("Tieout_Is_Final__c", "boolean", nillable=False, defaulted_on_create=True),
            FieldSpec("Tieout_Reconciled_At__c", "datetime"),
            _CURRENCY_CODE,
        ],
    }


# --------------------------------------------------------------------------- ids

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_STANDARD_PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q"}
_POD = "8d0"  # fixed, lowercase/digit only: keeps the id checksum cheap (see ObjectMeta)


def id_checksum(id15: str) -> str:
    """The 3-character case-safety suffix that turns a 15-char id into the 18-char form."""
    out = []
    for chunk in range(3):
        flags = 0
        for pos in range(5):
            char = id15[chunk * 5 + pos]
            if "A" <= char <= "Z":
                flags |= 1 << pos
        out.append(_CHECKSUM_ALPHABET[flags])
    return "".join(out)


def normalize_id(value: str) -> str | None:
    """An 18-char id for a 15- or 18-char id, or None when it cannot be a Salesforce id."""
    if not value.isalnum() or not value.isascii():
        return None
    if len(value) == 18:
        return value[:15] + id_checksum(value[:15])  # suffix is case-insensitive on input
    if len(value) == 15:
        return value + id_checksum(value)
    return None


def id_factory(prefix: str) -> Callable[[int], str]:
    """Ids ``{prefix}8d0{nnnnnnnnn}{suffix}``: deterministic, and cheap to mint by the million.

    Only the first 5-character chunk can hold capitals (the pod and counter are digits or
    lowercase), so the checksum suffix is the same for every id of the object: computed once.
    """
    head = prefix + _POD
    tail = id_checksum(head + "0" * 9)

    def make(number: int) -> str:
        return f"{head}{number:09d}{tail}"

    return make


def format_datetime(value: datetime) -> str:
    """Salesforce's wire format for datetimes: ``2024-01-31T12:00:00.000+0000``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


# --------------------------------------------------------------------------- value rules


class FieldError(Exception):
    """A value Salesforce would refuse.

    ``parse`` errors are values that cannot even be read as the field's type: the REST API
    refuses the whole request for those (JSON deserialization), Bulk fails just the row.
    """

    def __init__(self, status_code: str, message: str, fields: Sequence[str], *, parse: bool):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.fields = list(fields)
        self.parse = parse


Converter = Callable[[str], Any]


def _parse_error(spec: FieldSpec, raw: object) -> FieldError:
    soap = _SOAP_TYPES.get(spec.type, "xsd:string")
    return FieldError(
        "INVALID_FIELD",
        f"'{raw}' is not a valid value for the type {soap}",
        [spec.name],
        parse=True,
    )


def _text_converter(spec: FieldSpec) -> Converter:
    label, length = spec.display_label, spec.length
    allowed = frozenset(spec.picklist_values) if spec.restricted_picklist else None

    def convert(raw: str) -> str:
        if length and len(raw) > length:
            raise FieldError(
                "STRING_TOO_LONG",
                f"{label}: data value too large: {raw[:40]} (max length={length})",
                [spec.name],
                parse=False,
            )
        if allowed is not None and raw not in allowed:
            raise FieldError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{label}: bad value for restricted picklist field: {raw}",
                [spec.name],
                parse=False,
            )
        return raw

    return convert


def _decimal_converter(spec: FieldSpec) -> Converter:
    quantum = Decimal(1).scaleb(-spec.scale)
    max_adjusted = (spec.precision or 18) - spec.scale  # digits allowed left of the point
    label = spec.display_label

    def out_of_range(value: Decimal) -> bool:
        return bool(value) and value.adjusted() >= max_adjusted

    def convert(raw: str) -> Decimal:
        try:
            value = Decimal(raw)
        except (InvalidOperation, ValueError):
            raise _parse_error(spec, raw) from None
        if not value.is_finite():
            raise _parse_error(spec, raw)
        # Checked before rounding too: quantizing 1e30 would overflow the decimal context.
        if out_of_range(value) or out_of_range(value := value.quantize(quantum, ROUND_HALF_UP)):
            raise FieldError(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{label}: value outside of valid range on numeric field: {raw}",
                [spec.name],
                parse=False,
            )
        return value

    return convert


def _int_converter(spec: FieldSpec) -> Converter:
    def convert(raw: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise _parse_error(spec, raw) from None

    return convert


def _date_converter(spec: FieldSpec) -> Converter:
    def convert(raw: str) -> date:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise _parse_error(spec, raw) from None

    return convert


def _datetime_converter(spec: FieldSpec) -> Converter:
    def convert(raw: str) -> datetime:
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise _parse_error(spec, raw) from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    return convert


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _bool_converter(spec: FieldSpec) -> Converter:
    def convert(raw: str) -> bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _parse_error(spec, raw)

    return convert


def _id_converter(spec: FieldSpec) -> Converter:
    def convert(raw: str) -> str:
        normalized = normalize_id(raw)
        if normalized is None:
            raise FieldError(
                "MALFORMED_ID",
                f"{spec.display_label}: id value of incorrect type: {raw}",
                [spec.name],
                parse=False,
            )
        return normalized

    return convert


def converter_for(spec: FieldSpec) -> Converter:
    """The function that turns one non-empty CSV/JSON text value into the stored value."""
    if spec.type in _TEXT:
        return _text_converter(spec)
    if spec.type in _NUMERIC:
        return _decimal_converter(spec)
    makers: dict[str, Callable[[FieldSpec], Converter]] = {
        "int": _int_converter,
        "date": _date_converter,
        "datetime": _datetime_converter,
        "boolean": _bool_converter,
        "id": _id_converter,
        "reference": _id_converter,
    }
    return makers[spec.type](spec)


ColumnConverter = Callable[[Sequence[str]], Sequence[Any]]


class _Reject(Exception):
    """A column has at least one value its fast path cannot take: convert value by value."""


def column_converter_for(spec: FieldSpec) -> ColumnConverter | None:
    """Convert a whole CSV column at C speed (``map``, ``max``), raising :class:`_Reject`
    (or the C function's own error) if any value needs the per-value path. None: no fast path.

    Bulk jobs spend most of their time here, so the common case (all values fine) must not
    pay a Python-level call per value.
    """
    if spec.type in _TEXT:
        length = spec.length
        allowed = frozenset(spec.picklist_values) if spec.restricted_picklist else None

        def text(raws: Sequence[str]) -> Sequence[str]:
            if length and max(map(len, raws)) > length:
                raise _Reject
            if allowed is not None and not allowed.issuperset(raws):
                raise _Reject
            return raws

        return text
    if spec.type in _NUMERIC:
        quantum = Decimal(1).scaleb(-spec.scale)
        limit = Decimal(10) ** ((spec.precision or 18) - spec.scale)
        quantize = Decimal.quantize

        def number(raws: Sequence[str]) -> Sequence[Decimal]:
            values = [quantize(d, quantum, ROUND_HALF_UP) for d in map(Decimal, raws)]
            if max(values) >= limit or min(values) <= -limit:  # NaN/Infinity raise here
                raise _Reject
            return values

        return number
    if spec.type == "int":
        return lambda raws: list(map(int, raws))
    if spec.type == "date":
        return lambda raws: list(map(date.fromisoformat, raws))
    return None


FAST_PATH_ERRORS = (_Reject, ArithmeticError, ValueError, TypeError)


# --------------------------------------------------------------------------- objects

_SYSTEM_FIELDS = (
    FieldSpec("Id", "id", label="Record ID", length=18, nillable=False, createable=False,
              updateable=False, defaulted_on_create=True),
    FieldSpec("IsDeleted", "boolean", label="Deleted", nillable=False, createable=False,
              updateable=False, defaulted_on_create=True),
    FieldSpec("CreatedDate", "datetime", label="Created Date", nillable=False, createable=False,
              updateable=False, defaulted_on_create=True),
    FieldSpec("LastModifiedDate", "datetime", label="Last Modified Date", nillable=False,
              createable=False, updateable=False, defaulted_on_create=True),
    FieldSpec("SystemModstamp", "datetime", label="System Modstamp", nillable=False,
              createable=False, updateable=False, defaulted_on_create=True),
)  # fmt: skip
_CUSTOM_NAME = FieldSpec("Name", "string", length=80, nillable=False, defaulted_on_create=True)


@dataclass
class ObjectMeta:
    """An object's resolved schema: fields by (case-insensitive) name, ids, required fields."""

    name: str
    key_prefix: str
    fields: dict[str, FieldSpec]
    by_lower: dict[str, FieldSpec] = field(init=False)
    relationships: dict[str, FieldSpec] = field(init=False)
    converters: dict[str, Converter] = field(init=False)
    column_converters: dict[str, ColumnConverter | None] = field(init=False)
    external_ids: tuple[str, ...] = field(init=False)
    required: tuple[str, ...] = field(init=False)
    custom: bool = field(init=False)

    def __post_init__(self) -> None:
        self.by_lower = {name.lower(): spec for name, spec in self.fields.items()}
        self.relationships = {
            spec.relationship_name.lower(): spec
            for spec in self.fields.values()
            if spec.relationship_name
        }
        self.converters = {name: converter_for(spec) for name, spec in self.fields.items()}
        self.column_converters = {
            name: column_converter_for(spec) for name, spec in self.fields.items()
        }
        self.external_ids = tuple(n for n, s in self.fields.items() if s.external_id)
        self.required = tuple(
            n
            for n, s in self.fields.items()
            if not s.nillable and s.createable and not s.defaulted_on_create
            and s.type != "boolean"
        )  # fmt: skip
        self.custom = self.name.endswith("__c")

    @property
    def label(self) -> str:
        return self.name.removesuffix("__c").removeprefix("Tieout_").replace("_", " ")

    def describe(self, base_url: str) -> dict[str, Any]:
        """The realistic subset of ``/sobjects/{name}/describe`` a connector looks at."""
        fields = [_describe_field(spec) for spec in self.fields.values()]
        url = f"{base_url}/sobjects/{self.name}"
        return {
            **self.summary(base_url),
            "fields": fields,
            "childRelationships": [],
            "recordTypeInfos": [],
            "urls": {**self.summary(base_url)["urls"], "describe": f"{url}/describe"},
        }

    def summary(self, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "urls": {"sobject": url, "rowTemplate": f"{url}/{{ID}}"},
        }


def _describe_field(spec: FieldSpec) -> dict[str, Any]:
    text = spec.type in _TEXT or spec.type in ("id", "reference")
    return {
        "name": spec.name,
        "label": spec.display_label,
        "type": spec.type,
        "soapType": _SOAP_TYPES.get(spec.type, "xsd:string"),
        "length": spec.length if text else 0,
        "byteLength": spec.length * 3 if text else 0,
        "precision": spec.precision,
        "scale": spec.scale,
        "digits": spec.precision if spec.type == "int" else 0,
        "externalId": spec.external_id,
        "unique": spec.unique,
        "idLookup": spec.type == "id" or spec.external_id or spec.name == "Name",
        "nillable": spec.nillable,
        "createable": spec.createable,
        "updateable": spec.updateable,
        "defaultedOnCreate": spec.defaulted_on_create,
        "custom": spec.name.endswith("__c"),
        "calculated": False,
        "filterable": True,
        "sortable": spec.type != "textarea",
        "nameField": spec.name == "Name",
        "referenceTo": [spec.reference_to] if spec.reference_to else [],
        "relationshipName": spec.relationship_name,
        "restrictedPicklist": spec.restricted_picklist,
        "picklistValues": [
            {"value": v, "label": v, "active": True, "defaultValue": False}
            for v in spec.picklist_values
        ],
    }


def build_objects(schema: Mapping[str, Sequence[FieldSpec]]) -> dict[str, ObjectMeta]:
    """Resolve a user schema: add system fields and Name, give each object a key prefix."""
    objects: dict[str, ObjectMeta] = {}
    custom_count = 0
    for name, specs in schema.items():
        fields: dict[str, FieldSpec] = {s.name: s for s in _SYSTEM_FIELDS}
        if not any(s.name == "Name" for s in specs):
            fields["Name"] = _CUSTOM_NAME
        for spec in specs:
            if spec.type == "reference" and not spec.relationship_name:
                spec = replace(spec, relationship_name=spec.name.removesuffix("__c") + "__r")
            fields[spec.name] = spec
        prefix = _STANDARD_PREFIXES.get(name)
        if prefix is None:
            prefix = f"a{custom_count // 26}{chr(ord('A') + custom_count % 26)}"
            custom_count += 1
        objects[name] = ObjectMeta(name=name, key_prefix=prefix, fields=fields)
    for meta in objects.values():
        for spec in meta.fields.values():
            if spec.reference_to and spec.reference_to not in objects:
                raise ValueError(
                    f"{meta.name}.{spec.name} references {spec.reference_to}, "
                    "which is not in the schema"
                )
    return objects
