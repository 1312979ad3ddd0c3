"""What every command gets: the master client, built on first use, and output helpers.

Whatever a command prints that came from a node or another user (a reason, a
connection parameter, a title) goes through ``printable``: control characters
and bidirectional overrides are shown escaped, never sent to the terminal raw.
"""

import json
import unicodedata

import click

_ESCAPED = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def printable(value):
    """``value`` as text safe for a terminal: every control or format character
    (escape sequences, bidirectional overrides, NUL, newlines) written as an escape."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in _ESCAPED:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


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
            self._client = client.Client(master, token, ca_file=client.ca_for(master))
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
        cells.append(["-" if row.get(k) in (None, "") else _cell(row.get(k)) for _, k in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def _cell(value):
    """A table cell: one line (line breaks become spaces), printable."""
    text = value if isinstance(value, str) else str(value)
    return printable(text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


USAGE_COLUMNS = [("HOUR", "hour"), ("CPU_S", "cpu_seconds"), ("MEM_MB_AVG", "memory_mb_avg"),
                 ("MEM_MB_PEAK", "memory_mb_peak"), ("DISK_MB", "disk_mb_avg"),
                 ("NET_IN", "net_in_bytes"), ("NET_OUT", "net_out_bytes")]
RAW_USAGE_COLUMNS = [("AT", "at"), ("CPU_S", "cpu_seconds"), ("MEM_MB", "memory_mb"),
                     ("DISK_MB", "disk_mb"), ("NET_IN", "net_in_bytes"), ("NET_OUT", "net_out_bytes")]


def print_usage(points, raw=False):
    """A usage series as a table (hourly points, or raw samples)."""
    print_table(points, RAW_USAGE_COLUMNS if raw else USAGE_COLUMNS)
