"""Key commands: keygen."""

from __future__ import annotations

import click

from ..render import render
from .base import cli, command, json_option


@command(cli, "keygen")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write the identity here (0600; never overwrites). Default: stdout.",
)
@json_option
def keygen_cmd(output: str | None, as_json: bool) -> None:
    """Create an age X25519 identity and print its public recipient, like age-keygen."""
    from ..encryption import keygen

    result = keygen(output)
    if as_json:
        render({k: v for k, v in result.items() if k != "identity"}, True)
    elif result["identity"]:
        click.echo(result["identity"], nl=False)
    else:
        click.echo(f"Public key: {result['publicKey']}")
