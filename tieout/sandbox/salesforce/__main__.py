"""Run the sandbox by hand: ``python -m tieout.sandbox.salesforce [--port N]``.

Prints what a client needs (instance URL, CA bundle, login domain, throwaway credentials)
and serves until Ctrl-C. The credentials are printed on purpose: they are random per run,
exist only in this process, and a person has to paste them somewhere.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from tieout.sandbox.salesforce.server import SalesforceSandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tieout.sandbox.salesforce")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    parser.add_argument("--bulk-processing", choices=("background", "sync"), default="background")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with SalesforceSandbox(port=args.port, bulk_processing=args.bulk_processing) as sandbox:
        creds = sandbox.credentials
        lines = [
            f"instance_url      {sandbox.instance_url}",
            f"ca_bundle         {sandbox.ca_bundle}",
            f"login domain      {sandbox.login_domain}   (simple-salesforce domain=...)",
            f"token url         {sandbox.token_url}",
            f"username          {creds.username}",
            f"password          {creds.password}",
            f"security_token    {creds.security_token}",
            f"consumer_key      {creds.consumer_key}",
            f"consumer_secret   {creds.consumer_secret}",
            f"jwt private key   {sandbox.jwt_private_key_file}",
            "Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        while not stop.wait(0.5):
            pass
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
