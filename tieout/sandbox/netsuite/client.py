"""A real `netsuitesdk.NetSuiteClient`, aimed at a running `NetSuiteSandbox`.

netsuitesdk builds its WSDL and endpoint URLs from two class attributes; a subclass that
overrides them (one per sandbox, since the port differs) is all the redirection needed, so
the client code under test is exactly netsuitesdk's and zeep's.

The sandbox WSDL holds only the types tieout uses, so netsuitesdk's constructor cannot find
most of the ~160 types it looks up and logs one warning for each; those warnings are
filtered out (they only concern the sandbox's deliberately small WSDL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

from netsuitesdk.internal.client import NetSuiteClient

from tieout.connectors.netsuite import silence_missing_type_warnings

if TYPE_CHECKING:
    from tieout.sandbox.netsuite.server import NetSuiteSandbox

CLIENT_CLASS_NAME: Final = "SandboxNetSuiteClient"
"""Also the name of the logger netsuitesdk gives the client (it uses the class name)."""


silence_missing_type_warnings(CLIENT_CLASS_NAME)


def sandbox_client_class(
    sandbox: NetSuiteSandbox, *, wsdl_source: Literal["http", "file"] = "http"
) -> type[NetSuiteClient]:
    """A `NetSuiteClient` subclass whose URL templates point at `sandbox`.

    `wsdl_source="file"` loads the WSDL from the package instead of over HTTP (same
    schema; only the SOAP requests then reach the server).
    """
    wsdl = sandbox.wsdl_url_template if wsdl_source == "http" else sandbox.wsdl_path.as_uri()
    attributes = {
        "WSDL_URL_TEMPLATE": wsdl,
        "DATACENTER_URL_TEMPLATE": sandbox.datacenter_url_template,
        "__module__": __name__,
        "__doc__": f"netsuitesdk client aimed at the NetSuite sandbox on {sandbox.base_url}.",
    }
    return type(CLIENT_CLASS_NAME, (NetSuiteClient,), attributes)


def sandbox_client(
    sandbox: NetSuiteSandbox,
    *,
    connect: bool = True,
    operation_timeout: float | None = None,
    wsdl_source: Literal["http", "file"] = "http",
    **client_options: Any,
) -> NetSuiteClient:
    """A netsuitesdk client for `sandbox`, token-authenticated with its fake credentials.

    `connect=False` leaves authentication to the caller (`client.connect_tba(...)`).
    `operation_timeout` is zeep's per-request (connect and read) timeout in seconds; None
    waits forever, as netsuitesdk does by default. Other keywords go to `NetSuiteClient`
    (e.g. `page_size`, `search_body_fields_only`).
    """
    options = {**sandbox.client_kwargs(), **client_options}
    client = sandbox_client_class(sandbox, wsdl_source=wsdl_source)(**options)
    if operation_timeout is not None:
        client._client.transport.operation_timeout = operation_timeout
    if connect:
        client.connect_tba(**sandbox.tba_kwargs())
    return client
