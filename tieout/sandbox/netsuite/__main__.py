"""`python -m tieout.sandbox.netsuite [--port N]`: run the NetSuite sandbox until Ctrl-C.

Prints what a client needs (endpoint, WSDL, account and the sandbox's fake token
credentials, which are not secrets) so it can be used from a shell or another process.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence

from tieout.sandbox.netsuite.server import NetSuiteSandbox


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tieout.sandbox.netsuite",
        description="Serve a local NetSuite SOAP (2023_2) sandbox on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every request (default 0)"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="answer requests above this concurrency with WS_REQUEST_BLOCKED (default: no limit)",
    )
    args = parser.parse_args(argv)
    sandbox = NetSuiteSandbox(
        port=args.port, latency=args.latency, max_concurrent_requests=args.max_concurrent
    )
    with sandbox:
        lines = [
            "NetSuite sandbox (SuiteTalk SOAP 2023_2) is running.",
            f"  endpoint:        {sandbox.endpoint_url}",
            f"  WSDL:            {sandbox.wsdl_url}",
            f"  account:         {sandbox.account}",
            "  token credentials (fake, for this sandbox only):",
            f"    consumer key:    {sandbox.consumer_key}",
            f"    consumer secret: {sandbox.consumer_secret}",
            f"    token id:        {sandbox.token_key}",
            f"    token secret:    {sandbox.token_secret}",
            "  netsuitesdk: NetSuiteClient subclass with",
            f"    WSDL_URL_TEMPLATE = {sandbox.wsdl_url_template!r}",
            f"    DATACENTER_URL_TEMPLATE = {sandbox.datacenter_url_template!r}",
            "    and NetSuiteClient(account=..., wsdl_version='2023_2', caching=False)",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nstopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
