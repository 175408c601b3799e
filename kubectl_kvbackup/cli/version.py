"""``kubectl kvbackup version``: what is installed, which bundles it reads and writes, and (-o json|yaml) the server."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

from .common import add_connection_flags, connection_options, warn

VERSION_OUTPUTS = ("json", "yaml")


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "version",
        description="Print the plugin version, the bundle format it writes, and the Python running it. With -o json "
                    "or yaml, also the API server's version when the cluster is reachable (as kubectl version).")
    parser.add_argument("-o", "--output", choices=VERSION_OUTPUTS, help="json or yaml, with the server's version")
    parser.add_argument("--client", action="store_true", help="do not ask the server for its version")
    add_connection_flags(parser)
    parser.set_defaults(run=run, request_timeout="5s")  # a version is not worth a long wait for a silent server


def versions() -> dict[str, Any]:
    from .. import __version__
    from ..bundle import FORMAT, FORMAT_VERSION, READABLE_FORMAT_VERSIONS

    return {"pluginVersion": f"v{__version__}", "bundleFormat": FORMAT, "bundleFormatVersion": FORMAT_VERSION,
            "bundleFormatVersionsRead": list(READABLE_FORMAT_VERSIONS),
            "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                       "executable": sys.executable}}


def server_version(args: argparse.Namespace) -> dict[str, Any] | None:
    """The API server's /version, or None (with a warning) when no cluster answers: the local part still prints."""
    from ..cluster import KubeError, connect

    try:
        reply = connect(connection_options(args)).request("GET", "/version")
    except KubeError as error:
        text = str(error)
        warn(f"warning: no server version: {text.removeprefix('error: ')}")
        return None
    return {key: reply.get(key) for key in ("major", "minor", "gitVersion", "platform") if key in reply}


def run(args: argparse.Namespace) -> int:
    data = versions()
    if not args.output:
        python = data["python"]
        print(f"Plugin Version: {data['pluginVersion']}\n"
              f"Bundle Format: {data['bundleFormat']} version {data['bundleFormatVersion']} (reads "
              f"{', '.join(map(str, data['bundleFormatVersionsRead']))})\n"
              f"Python Version: {python['version']} ({python['implementation']}, {python['executable']})")
        return 0
    if not args.client:
        server = server_version(args)
        if server is not None:
            data["serverVersion"] = server
    from .printers import print_data

    print_data(data, args.output, sys.stdout)
    return 0
