"""The sandbox's own XSD subset, read once, used to decode requests and encode responses.

zeep serializes and parses strictly by the schema (element order, namespaces, xsi:type), so
the sandbox must speak exactly the shapes its WSDL declares. Reading those shapes from the
shipped XSD files, instead of repeating them in Python, keeps the two from drifting apart:
add an element to `transactions.general.xsd` and the sandbox stores and returns it.

Values decode to plain Python: dicts for complex types (attributes and child elements by
local name; repeated elements as lists), `Decimal` for xsd:double (money must stay exact),
`bool`, `int`, and `str` for everything else, dateTimes included (kept as sent). A value of
a polymorphic element (declared abstract, e.g. a custom field) carries its concrete type's
local name under the key `"xsiType"`.

Parsing uses lxml, whose elements keep their in-scope namespace declarations, which resolving
QName-valued attributes (xsi:type) needs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # element type names; lxml's elements behave alike
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, Final, cast
from xml.sax.saxutils import escape, quoteattr

from lxml import etree  # type: ignore[import-untyped]

WSDL_DIR: Final = Path(__file__).resolve().parent / "wsdl"

XSD: Final = "http://www.w3.org/2001/XMLSchema"
XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
CORE: Final = "urn:core_2023_2.platform.webservices.netsuite.com"
CORE_TYPES: Final = "urn:types.core_2023_2.platform.webservices.netsuite.com"
FAULT_TYPES: Final = "urn:types.faults_2023_2.platform.webservices.netsuite.com"
FAULTS: Final = "urn:faults_2023_2.platform.webservices.netsuite.com"
MESSAGES: Final = "urn:messages_2023_2.platform.webservices.netsuite.com"
COMMON: Final = "urn:common_2023_2.platform.webservices.netsuite.com"
ACCOUNTING: Final = "urn:accounting_2023_2.lists.webservices.netsuite.com"
ACCOUNTING_TYPES: Final = "urn:types.accounting_2023_2.lists.webservices.netsuite.com"
SALES: Final = "urn:sales_2023_2.transactions.webservices.netsuite.com"
GENERAL: Final = "urn:general_2023_2.transactions.webservices.netsuite.com"

# The prefixes NetSuite itself uses in its responses; declared once on every response envelope.
PREFIXES: Final[Mapping[str, str]] = {
    "soapenv": SOAP_ENV,
    "xsd": XSD,
    "xsi": XSI,
    "platformCore": CORE,
    "platformCoreTyp": CORE_TYPES,
    "platformFaultTyp": FAULT_TYPES,
    "platformFaults": FAULTS,
    "platformMsgs": MESSAGES,
    "platformCommon": COMMON,
    "listAcct": ACCOUNTING,
    "listAcctTyp": ACCOUNTING_TYPES,
    "tranSales": SALES,
    "tranGeneral": GENERAL,
}
_PREFIX_OF: Final = {uri: prefix for prefix, uri in PREFIXES.items()}

QName = tuple[str, str]
"""(namespace URI, local name)."""

_XSI_TYPE: Final = f"{{{XSI}}}type"


class SchemaViolation(ValueError):
    """A request does not match the sandbox's schema (answered with a SOAP fault)."""


# --------------------------------------------------------------------------- XML reading


class XmlDoc:
    """A parsed document that knows which namespace prefixes are in scope where.

    Parsed by lxml (zeep's own XML library): its elements keep their in-scope namespace
    declarations (`nsmap`), which QName-valued attributes (xsi:type) need, and it parses a
    list request of 200 records about ten times faster than an ElementTree pull parser that
    records the declarations itself. Comments and processing instructions are dropped (as
    ElementTree does); DTDs, entities and network access are refused.
    """

    def __init__(self, data: bytes) -> None:
        # Entity expansion is the classic XML bomb; SOAP never needs a DTD.
        if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
            raise SchemaViolation("DTDs are not allowed in SOAP messages")
        parser = etree.XMLParser(  # one per document: lxml parsers are not thread-safe
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            remove_comments=True,
            remove_pis=True,
            huge_tree=False,
        )
        try:
            root = etree.fromstring(data, parser)
        except etree.XMLSyntaxError as exc:
            raise SchemaViolation(f"malformed XML: {exc}") from None
        if root is None:
            raise SchemaViolation("empty XML document")
        self.root: ET.Element = root

    def resolve(self, element: ET.Element, prefixed: str) -> QName:
        """Resolve a QName-valued attribute (`ns3:JournalEntry`) in the element's scope."""
        prefix, _, local = prefixed.strip().rpartition(":")
        uri = cast(Any, element).nsmap.get(prefix or None)
        if uri is None:
            raise SchemaViolation(f"undeclared namespace prefix in {prefixed!r}")
        return (uri, local)


def split_tag(tag: str) -> QName:
    """`{uri}local` -> (uri, local); an unqualified tag has namespace ''."""
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return (uri, local)
    return ("", tag)


# --------------------------------------------------------------------------- type model


@dataclass(frozen=True)
class ElementDecl:
    name: str
    namespace: str
    type: QName
    many: bool


@dataclass(frozen=True)
class ComplexType:
    qname: QName
    abstract: bool
    base: QName | None
    elements: tuple[ElementDecl, ...]
    attributes: tuple[tuple[str, QName], ...]
    simple_content: QName | None


@dataclass(frozen=True)
class _Ref:
    target: QName
    many: bool


@dataclass
class _RawType:
    abstract: bool = False
    base: QName | None = None
    simple: QName | None = None
    items: list[ElementDecl | _Ref] = field(default_factory=list)
    attributes: list[tuple[str, QName]] = field(default_factory=list)


def _read_complex(doc: XmlDoc, node: ET.Element, tns: str) -> _RawType:
    """One `<complexType>`: a sequence, attributes, or a complex/simple content extension."""
    spec = _RawType(abstract=node.get("abstract") == "true")

    def read_body(parent: ET.Element) -> None:
        for child in parent:
            kind = split_tag(child.tag)[1]
            if kind == "sequence":
                for el in child:
                    many = el.get("maxOccurs") == "unbounded"
                    if el.get("ref"):
                        spec.items.append(_Ref(doc.resolve(el, el.get("ref", "")), many))
                    else:
                        el_type = doc.resolve(el, el.get("type", ""))
                        spec.items.append(ElementDecl(el.get("name", ""), tns, el_type, many))
            elif kind == "attribute":
                attr_type = doc.resolve(child, child.get("type", ""))
                spec.attributes.append((child.get("name", ""), attr_type))

    read_body(node)
    for child in node:
        kind = split_tag(child.tag)[1]
        if kind in ("complexContent", "simpleContent"):
            extension = next(iter(child))
            ext_base = doc.resolve(extension, extension.get("base", ""))
            if kind == "complexContent":
                spec.base = ext_base
            else:
                spec.simple = ext_base
            read_body(extension)
    return spec


@dataclass(frozen=True)
class _Shape:
    """A complex type's attributes and elements, inherited ones included."""

    attributes: tuple[tuple[str, QName], ...]
    elements: tuple[ElementDecl, ...]  # none for simple content
    known: frozenset[str]  # the keys a value may have
    by_tag: dict[str, ElementDecl]  # elements by `{namespace}name` (ElementTree's tag)
    #: Text-only elements by tag: their XSD type's local name, or "" for a simple type.
    leaves: dict[str, str]
    attr_types: dict[str, QName]  # `attributes` as a mapping
    #: Elements of a concrete complex type without simple content, by tag: that type's
    #: `attr_types` (a RecordRef: when it has no children, its attributes are all of it).
    compounds: dict[str, dict[str, QName]]


class Schema:
    """Complex types, simple types and global elements of every XSD in `wsdl/`."""

    def __init__(self, xsd_files: Sequence[Path]) -> None:
        self.complex_types: dict[QName, ComplexType] = {}
        self.simple_types: set[QName] = set()
        self.elements: dict[QName, ElementDecl] = {}
        raw: dict[QName, _RawType] = {}
        for path in xsd_files:
            doc = XmlDoc(path.read_bytes())
            tns = doc.root.get("targetNamespace", "")
            for node in doc.root:
                kind = split_tag(node.tag)[1]
                name = node.get("name", "")
                if kind == "simpleType":
                    self.simple_types.add((tns, name))
                elif kind == "element":
                    el_type = doc.resolve(node, node.get("type", ""))
                    self.elements[(tns, name)] = ElementDecl(name, tns, el_type, many=False)
                elif kind == "complexType":
                    raw[(tns, name)] = _read_complex(doc, node, tns)
        # Element refs (`<element ref="platformCore:status"/>`) point at global elements,
        # which may live in a file read later; resolve them once everything is known.
        for qname, spec in raw.items():
            elements = tuple(
                replace(self.elements[item.target], many=item.many)
                if isinstance(item, _Ref)
                else item
                for item in spec.items
            )
            self.complex_types[qname] = ComplexType(
                qname, spec.abstract, spec.base, elements, tuple(spec.attributes), spec.simple
            )
        # Per-type answers decode/encode ask for on every element (the types never change).
        self._shapes: dict[QName, _Shape] = {}
        self._plans: dict[QName, _Plan | None] = {}
        self._subtypes: dict[tuple[QName, str], QName] = {}

    # -- queries

    def all_elements(self, qname: QName) -> list[ElementDecl]:
        """Elements of a type, inherited ones first (the order zeep expects)."""
        ctype = self.complex_types[qname]
        inherited = self.all_elements(ctype.base) if ctype.base in self.complex_types else []
        return [*inherited, *ctype.elements]

    def all_attributes(self, qname: QName) -> list[tuple[str, QName]]:
        ctype = self.complex_types[qname]
        inherited = self.all_attributes(ctype.base) if ctype.base in self.complex_types else []
        return [*inherited, *ctype.attributes]

    def is_subtype(self, qname: QName, base: QName) -> bool:
        current: QName | None = qname
        while current is not None:
            if current == base:
                return True
            ctype = self.complex_types.get(current)
            current = ctype.base if ctype else None
        return False

    def subtype_named(self, base: QName, local: str) -> QName:
        """The unique subtype of `base` called `local` (xsi:type values are stored bare)."""
        found = self._subtypes.get((base, local))
        if found is None:
            found = self._subtypes[(base, local)] = self._find_subtype(base, local)
        return found

    def _find_subtype(self, base: QName, local: str) -> QName:
        matches = [q for q in self.complex_types if q[1] == local and self.is_subtype(q, base)]
        if len(matches) != 1:
            raise ValueError(f"no unique subtype {local!r} of {base[1]!r}")
        return matches[0]

    def _shape(self, qname: QName) -> _Shape:
        shape = self._shapes.get(qname)
        if shape is None:
            ctype = self.complex_types[qname]
            attributes = tuple(self.all_attributes(qname))
            elements = () if ctype.simple_content else tuple(self.all_elements(qname))
            known = {"xsiType", *(a for a, _ in attributes), *(e.name for e in elements)}
            if ctype.simple_content:
                known.add("value")
            by_tag = {(f"{{{d.namespace}}}{d.name}" if d.namespace else d.name): d
                      for d in self.all_elements(qname)}  # fmt: skip
            leaves = {tag: (d.type[1] if d.type[0] == XSD else "") for tag, d in by_tag.items()
                      if d.type[0] == XSD or d.type in self.simple_types}  # fmt: skip
            compounds = {
                tag: dict(self.all_attributes(d.type))
                for tag, d in by_tag.items()
                if d.type in self.complex_types
                and not self.complex_types[d.type].abstract
                and self.complex_types[d.type].simple_content is None
            }
            shape = self._shapes[qname] = _Shape(
                attributes, elements, frozenset(known), by_tag, leaves, dict(attributes), compounds
            )
        return shape

    # -- XML -> Python

    def _plan(self, qname: QName) -> _Plan | None:
        """How `decode_records` decodes a `qname` element (None for an abstract type or one
        with simple content). Elements it has no step for (an abstract or simple-content
        type, a type being planned) are left to `decode`."""
        if qname in self._plans:
            return self._plans[qname]
        self._plans[qname] = None  # a recursive type is decoded by `decode`
        ctype = self.complex_types[qname]
        plan: _Plan | None = None
        if not ctype.abstract and ctype.simple_content is None:
            shape = self._shape(qname)
            steps: dict[str, _Step] = {}
            for tag, decl in shape.by_tag.items():
                leaf = shape.leaves.get(tag)
                if leaf == "string":
                    steps[tag] = (decl.name, decl.many, _STRING, None)
                elif leaf is not None:
                    steps[tag] = (decl.name, decl.many, _LEAF, _converter(leaf))
                elif decl.type in self.complex_types and (sub := self._plan(decl.type)):
                    steps[tag] = (decl.name, decl.many, _COMPLEX, sub)
            plan = _Plan(dict(shape.attr_types), steps)
        self._plans[qname] = plan
        return plan

    def decode_records(
        self, doc: XmlDoc, element: ET.Element, declared: QName, typed: int
    ) -> dict[str, Any] | None:
        """What `decode(doc, element, declared)` gives for a list request's element (one
        repeated element of an abstract type, e.g. upsertList's records), with two thirds of
        the work, when the document has `typed` xsi:type attributes at most and each record
        has one of them (so no element below a record has one); None otherwise, or when a
        record holds something only `decode` reads (which then decodes it, or refuses what
        is wrong)."""
        shape = self._shape(declared)
        if len(shape.by_tag) != 1 or element.items():
            return None
        [(tag, decl)] = shape.by_tag.items()
        if not decl.many or decl.type not in self.complex_types:
            return None
        records = []
        for record in element:
            xsi_type = record.get(_XSI_TYPE)
            if record.tag != tag or not xsi_type:
                return None
            typed -= 1
            actual = doc.resolve(record, xsi_type)
            if actual == decl.type or not self.is_subtype(actual, decl.type):
                return None
            plan = self._plan(actual)
            if plan is None:
                return None
            try:
                records.append(_decode_plain(plan, record, {"xsiType": actual[1]}))
            except _NeedsDecode:
                return None
        if typed:  # a ":type" somewhere else: maybe an xsi:type below a record
            return None
        return {decl.name: records} if records else None

    def decode(self, doc: XmlDoc, element: ET.Element, declared: QName) -> Any:
        """Decode `element`, declared with type `declared`, into plain Python values."""
        actual = declared
        xsi_type = element.get(_XSI_TYPE)
        if xsi_type:
            actual = doc.resolve(element, xsi_type)
            if actual != declared and not self.is_subtype(actual, declared):
                raise SchemaViolation(
                    f"<{split_tag(element.tag)[1]}>: {actual[1]} is not a {declared[1]}"
                )
        if actual[0] == XSD:
            return _from_text(actual[1], element.text or "", split_tag(element.tag)[1])
        if actual in self.simple_types:
            return (element.text or "").strip()
        ctype = self.complex_types.get(actual)
        if ctype is None:
            raise SchemaViolation(f"type {actual[1]!r} is not supported by the sandbox")
        if ctype.abstract:
            raise SchemaViolation(f"<{split_tag(element.tag)[1]}> needs a concrete xsi:type")
        shape = self._shape(actual)
        out: dict[str, Any] = {}
        if actual != declared:
            out["xsiType"] = actual[1]
        attr_types = shape.attr_types
        for name, raw in element.items():  # the few attributes present, in one call
            attr_type = attr_types.get(name)
            if attr_type is not None:
                out[name] = _from_text(attr_type[1], raw, name) if attr_type[0] == XSD else raw
        if ctype.simple_content is not None:
            out["value"] = _from_text(ctype.simple_content[1], element.text or "", "value")
            return out
        decls, leaves, compounds = shape.by_tag, shape.leaves, shape.compounds
        for child in element:
            tag = child.tag
            decl = decls.get(tag)
            if decl is None:
                raise SchemaViolation(f"unexpected element <{split_tag(tag)[1]}> in {actual[1]}")
            leaf = leaves.get(tag)
            if leaf is not None and child.get(_XSI_TYPE) is None:
                # What the call below returns for a text-only element, without the call
                # (most of a journal entry's elements are these).
                text = child.text or ""
                value = _from_text(leaf, text, decl.name) if leaf else text.strip()
            elif (
                (child_attrs := compounds.get(tag)) is not None
                and not len(child)
                and child.get(_XSI_TYPE) is None
            ):
                # Likewise for an element of attributes only (a reference, a third of them).
                value = {}
                for name, raw in child.items():
                    attr_type = child_attrs.get(name)
                    if attr_type is not None:
                        value[name] = (
                            _from_text(attr_type[1], raw, name) if attr_type[0] == XSD else raw
                        )
            else:
                value = self.decode(doc, child, decl.type)
            if decl.many:
                out.setdefault(decl.name, []).append(value)
            else:
                out[decl.name] = value
        return out

    # -- Python -> XML

    def encode(
        self, out: list[str], namespace: str, name: str, declared: QName, value: Any
    ) -> None:
        """Append `<prefix:name>` for `value` (a decoded-shape value) to `out`."""
        if value is None:
            return
        if type(value) is EncodedXml:
            out.append(value)
            return
        actual = declared
        tag = f"{_PREFIX_OF[namespace]}:{name}"
        type_attr = ""
        is_mapping = type(value) is dict or isinstance(value, Mapping)
        if is_mapping and "xsiType" in value:
            actual = self.subtype_named(declared, value["xsiType"])
            type_attr = f' xsi:type="{_PREFIX_OF[actual[0]]}:{actual[1]}"'
        if actual[0] == XSD or actual in self.simple_types:
            out.append(f"<{tag}{type_attr}>{_text(_to_text(value))}</{tag}>")
            return
        ctype = self.complex_types[actual]
        if ctype.abstract:
            raise ValueError(f"{name}: abstract {actual[1]} needs an 'xsiType'")
        if not is_mapping:
            raise ValueError(f"{name}: expected a mapping for {actual[1]}, got {value!r}")
        shape = self._shape(actual)
        attributes, elements = shape.attributes, shape.elements
        if not shape.known.issuperset(value):
            unknown = set(value) - shape.known
            raise ValueError(f"{actual[1]} has no field(s) {sorted(unknown)}")
        attr_text = "".join(
            [
                f" {a}={_attribute(_to_text(value[a]))}"
                for a, _ in attributes
                if value.get(a) is not None
            ]
        )
        out.append(f"<{tag}{type_attr}{attr_text}>")
        if ctype.simple_content:
            out.append(_text(_to_text(value.get("value", ""))))
        for decl in elements:
            item = value.get(decl.name)
            if item is None:
                continue
            if decl.many:
                if not isinstance(item, list | tuple):
                    raise ValueError(f"{decl.name}: expected a list, got {item!r}")
                for one in item:
                    self.encode(out, decl.namespace, decl.name, decl.type, one)
            else:
                self.encode(out, decl.namespace, decl.name, decl.type, item)
        out.append(f"</{tag}>")

    def encode_global(self, out: list[str], element: QName, value: Any) -> None:
        decl = self.elements[element]
        self.encode(out, decl.namespace, decl.name, decl.type, value)


class EncodedXml(str):
    """A value already encoded as its element's text, which `Schema.encode` writes as it is
    (made from a template of the encoder's own output: see `soap.WriteResponses`)."""


_STRING, _LEAF, _COMPLEX = 0, 1, 2
#: A child element's decoding: (name, many, kind, (text, name) -> value for _LEAF or a
#: `_Plan` for _COMPLEX).
_Step = tuple[str, bool, int, Any]


@dataclass(frozen=True)
class _Plan:
    """A concrete complex type's attributes and elements, for `_decode_plain`."""

    attr_types: dict[str, QName]
    steps: dict[str, _Step]  # by ElementTree tag


class _NeedsDecode(Exception):
    """An element `_decode_plain` does not know: `Schema.decode` decodes it (or refuses it)."""


def _decode_plain(plan: _Plan, element: ET.Element, out: dict[str, Any]) -> dict[str, Any]:
    """`Schema.decode` of an element without xsi:type in it, along `plan`, into `out`."""
    attr_types = plan.attr_types
    for name, raw in element.items():
        attr_type = attr_types.get(name)
        if attr_type is not None:
            out[name] = _from_text(attr_type[1], raw, name) if attr_type[0] == XSD else raw
    steps = plan.steps
    for child in element:
        step = steps.get(child.tag)
        if step is None:  # unknown here (`decode` refuses it)
            raise _NeedsDecode
        name, many, kind, arg = step
        if kind == _STRING:
            value: Any = child.text or ""
        elif kind == _LEAF:
            value = arg(child.text or "", name)
        else:
            value = _decode_plain(arg, child, {})
        if many:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def _converter(leaf: str) -> Callable[[str, str], Any]:
    """(text, element name) -> value as `decode` makes it for a text-only element whose type
    is XSD's `leaf` ("": a simple type, its text stripped)."""
    if not leaf:
        return lambda text, _where: text.strip()
    if leaf == "double":
        return _double
    return lambda text, where: _from_text(leaf, text, where)


def _double(text: str, where: str) -> Decimal:
    """`_from_text("double", ...)`."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise SchemaViolation(f"<{where}>: {text.strip()!r} is not a number") from None
    if not number.is_finite():
        raise SchemaViolation(f"<{where}>: {text.strip()!r} is not a finite number")
    return number


def _from_text(xsd_type: str, text: str, where: str) -> Any:
    if xsd_type == "string":
        return text
    stripped = text.strip()
    if xsd_type == "boolean":
        if stripped not in ("true", "false", "1", "0"):
            raise SchemaViolation(f"<{where}>: {stripped!r} is not a boolean")
        return stripped in ("true", "1")
    if xsd_type in ("long", "int"):
        try:
            return int(stripped)
        except ValueError:
            raise SchemaViolation(f"<{where}>: {stripped!r} is not an integer") from None
    if xsd_type == "double":
        return _double(text, where)
    return stripped


_MARKUP: Final = re.compile(r"[&<>]")
_ATTRIBUTE_MARKUP: Final = re.compile(r"[&<>\"'\n\r\t]")


def _text(text: str) -> str:
    """`escape(text)`, without its three replacements when there is nothing to escape (a
    response's values almost never have)."""
    return escape(text) if _MARKUP.search(text) else text


def _attribute(text: str) -> str:
    """`quoteattr(text)`, likewise."""
    return quoteattr(text) if _ATTRIBUTE_MARKUP.search(text) else f'"{text}"'


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


@cache
def load_schema() -> Schema:
    """The schema of the shipped XSD files (parsed once per process)."""
    return Schema(sorted(WSDL_DIR.glob("*.xsd")))
