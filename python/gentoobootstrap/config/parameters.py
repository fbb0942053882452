"""The OS parameters (``gnt-instance add -O name=value``), declared once.

The declarations drive ``parameters.list``, ``verify`` and the README.  Values
are never logged or echoed: Ganeti merges secret parameters into the same
``OSP_*`` variables.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gentoobootstrap.config.settings import DECLARATIONS, Kind
from gentoobootstrap.disk.filesystems import ROOT_FILESYSTEMS
from gentoobootstrap.errors import ParameterError

#: Public key types OpenSSH takes in authorized_keys.
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
    "ssh-dss",
)
# TYPE BASE64 [COMMENT] and nothing more: no options (command="...", from=...) before the
# type, no control character anywhere, so no second line either.
_SSH_KEY = re.compile(r"(\S+)[ \t]+([A-Za-z0-9+/]+={0,2})(?:[ \t]+([^\x00-\x1f\x7f]*))?")


def ssh_key(raw: str) -> str:
    """One OpenSSH public key line; its blob must name the key type the line names."""
    match = _SSH_KEY.fullmatch(raw.strip(" \t"))
    if match and match.group(1) in SSH_KEY_TYPES:
        try:
            blob = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            blob = b""
        kind = match.group(1).encode()
        if blob[:4] == len(kind).to_bytes(4, "big") and blob[4 : 4 + len(kind)] == kind:
            return match.group(0)
    raise ValueError(
        "allowed values: one OpenSSH public key line, TYPE BASE64 [COMMENT], "
        f"TYPE one of {', '.join(SSH_KEY_TYPES)}; no options, no second line"
    )


@dataclass(frozen=True)
class Parameter:
    name: str
    help: str
    kind: Kind

    @property
    def variable(self) -> str:
        return "OSP_" + self.name.upper().replace("-", "_")


PARAMETERS = {
    p.name: p
    for p in (
        Parameter(
            "filesystem",
            f"root filesystem type ({', '.join(ROOT_FILESYSTEMS)}); default from FILESYSTEM",
            DECLARATIONS["FILESYSTEM"].kind,
        ),
        Parameter(
            "network",
            "guest network: none, dhcp or ganeti; default from NETWORK",
            DECLARATIONS["NETWORK"].kind,
        ),
        Parameter(
            "ssh_key",
            "an SSH public key for root (enables sshd)",
            Kind("one OpenSSH public key line, no options", ssh_key),
        ),
        Parameter(
            "root_password",
            "root login: empty, locked or a crypt hash; default from ROOT_PASSWORD",
            DECLARATIONS["ROOT_PASSWORD"].kind,
        ),
        Parameter(
            "timezone",
            "time zone such as Europe/Berlin; default from TIMEZONE",
            DECLARATIONS["TIMEZONE"].kind,
        ),
    )
}
_BY_VARIABLE = {p.variable: p for p in PARAMETERS.values()}


def list_text() -> str:
    """The content of ``parameters.list``: exactly ``name description`` a line."""
    return "".join(f"{p.name} {p.help}\n" for p in PARAMETERS.values())


def parse(environ: Mapping[str, str]) -> dict[str, object]:
    """Every ``OSP_*`` variable checked against its declaration: ``name -> value``."""
    values: dict[str, object] = {}
    for variable, raw in sorted(environ.items()):
        if not variable.startswith("OSP_"):
            continue
        parameter = _BY_VARIABLE.get(variable)
        if parameter is None:
            known = ", ".join(PARAMETERS)
            raise ParameterError(f"unknown OS parameter {variable[4:].lower()!r} (known: {known})")
        try:
            values[parameter.name] = parameter.kind.parse(raw)
        except ValueError as e:  # the message names the allowed values, never the value given
            raise ParameterError(f"OS parameter {parameter.name!r} has a bad value; {e}") from None
    return values
