"""The OS parameters (``gnt-instance add -O name=value``), declared once.

The declarations drive ``parameters.list``, ``verify`` and the README.  Values
are never logged or echoed: Ganeti merges secret parameters into the same
``OSP_*`` variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gentoobootstrap.errors import ParameterError
from gentoobootstrap.settings import DECLARATIONS, FILESYSTEMS, Kind

_SSH_KEY = re.compile(
    r"(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-\S+)\s+[A-Za-z0-9+/]+=*(\s.*)?"
)


def _ssh_key(raw: str) -> str:
    if not _SSH_KEY.fullmatch(raw.strip()):
        raise ValueError(
            "allowed values: one OpenSSH public key line (ssh-ed25519 AAAA... comment)"
        )
    return raw.strip()


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
            f"root filesystem type ({', '.join(FILESYSTEMS)}); default from FILESYSTEM",
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
            Kind("OpenSSH public key", _ssh_key),
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


def parameters_list_text() -> str:
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
