"""Key commands: keygen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from .base import cli, command, json_option

if TYPE_CHECKING:
    from ..render import render
else:
    from ._lazy import render  # loaded on first use: --help needs no renderer


@command(cli, "keygen")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write the identity here (0600; never overwrites). Default: stdout.",
)
@json_option
def keygen_cmd(output: str | None, as_json: bool) -> None:
    """Create an age X25519 identity, like age-keygen: with --output, write it there (0600)
    and print its public recipient; without, print the identity on stdout (age's identity
    file format) and the public key on stderr. --json needs --output: it prints only the
    public key, and the secret would be lost."""
    if as_json and output is None:
        raise UsageError(
            "keygen --json needs --output FILE: the secret key would be lost otherwise "
            "(without --json the identity is printed on stdout)"
        )
    from ..encryption import keygen

    result = keygen(output)
    if as_json:
        render({k: v for k, v in result.items() if k != "identity"}, True)
    elif result["identity"]:
        click.echo(result["identity"], nl=False)
        click.echo(f"Public key: {result['publicKey']}", err=True)
    else:
        click.echo(f"Public key: {result['publicKey']}")
