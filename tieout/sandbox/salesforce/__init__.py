"""A local Salesforce org over HTTPS for tests and demos; see :mod:`.server` for the why."""

from tieout.sandbox.salesforce.api import RequestRecord
from tieout.sandbox.salesforce.faults import Fault, FaultKind, Operation
from tieout.sandbox.salesforce.schema import FieldSpec, default_schema
from tieout.sandbox.salesforce.server import SalesforceSandbox

__all__ = [
    "Fault",
    "FaultKind",
    "FieldSpec",
    "Operation",
    "RequestRecord",
    "SalesforceSandbox",
    "default_schema",
]
