"""What every command gets: the master client, built on first use, and output helpers."""

import json

import click


class Context:
    def __init__(self, master=None, token=None):
        self._master = master
        self._token = token
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from .. import client       # requests is imported only by commands that talk

            master, token = client.resolve(self._master, self._token)
            self._client = client.Client(master, token)
        return self._client


pass_context = click.make_pass_decorator(Context)


def print_json(value):
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def print_table(rows, columns):
    """rows: list of dicts; columns: list of (header, key)."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(h) for h, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) in (None, "") else str(row.get(k)) for _, k in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
