"""Real SlapOS profiles expand as zc.buildout 6.0.1 expands them (issue 13).

The corpus (``conformance/corpus``: SlapOS component profiles and ``stack/slapos.cfg``
with everything they extend, copied at a pinned commit) and what zc.buildout computed
for each (``conformance/expected``) were recorded by ``conformance/record.py``; here
slapnode's engine expands the same files and every section and option must be equal.
"""

import json
import platform
import sys
from pathlib import Path

import pytest

from tests.conformance import measure

HERE = Path(__file__).resolve().parent / "conformance"
RECORDS = sorted((HERE / "expected").glob("*.json"))


def test_the_corpus_is_recorded():
    assert len(RECORDS) >= 25
    assert (HERE / "corpus" / "SOURCE").read_text().startswith("https://github.com/SlapOS/slapos at ")


@pytest.mark.parametrize("record", RECORDS, ids=[r.stem for r in RECORDS])
def test_a_slapos_profile_expands_as_zc_buildout_expands_it(record):
    expected = json.loads(record.read_text())
    here = {"python": "%d.%d" % sys.version_info[:2], "machine": platform.machine(),
            "system": platform.system()}
    # conditional sections ([x:python3], [y:linux and platform.machine() == 'x86_64'])
    # were evaluated for the recording machine: compare only on the same kind of machine
    assert expected["recorded_on"] == here, \
        f"recorded on {expected['recorded_on']}, this is {here}: re-record with conformance/record.py"

    def fix(text):
        return text.replace("@CORPUS@", str(HERE / "corpus")).replace("@PYTHON@", sys.executable)

    mine = measure.slapnode_expand(HERE / "corpus" / expected["profile"])
    differences = measure.compare(mine, expected["sections"], fix)
    assert differences == [], "\n".join(
        f"[{section}] {option}: slapnode {left!r:.200} buildout {right!r:.200}"
        for section, option, left, right in differences[:10])
    assert mine
