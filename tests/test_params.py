"""SlapOS parameter XML: both forms in and out, and hostile input refused."""

import pytest

from slapnode import params
from slapnode.errors import ParameterError

PLAIN = b"""<?xml version="1.0" encoding="utf-8"?>
<instance>
  <parameter id="boinc-project-url">http://example.org/project/</parameter>
  <parameter id="boinc-account-key">0123abcd</parameter>
</instance>"""


def test_plain_form_reads_every_parameter_as_text():
    assert params.parse_xml(PLAIN) == {
        "boinc-project-url": "http://example.org/project/", "boinc-account-key": "0123abcd"}


def test_json_in_xml_form_reads_the_json_object():
    doc = '<instance><parameter id="_">{"a": 1, "b": [true, null]}</parameter></instance>'
    assert params.parse_xml(doc) == {"a": 1, "b": [True, None]}


def test_empty_parameter_is_an_empty_string():
    assert params.parse_xml('<instance><parameter id="x"/></instance>') == {"x": ""}


@pytest.mark.parametrize("value", [{"a": "1", "b": "two"}, {"n": 3, "nested": {"x": [1, 2]}}, {}])
def test_round_trip_through_xml(value):
    assert params.parse_xml(params.to_xml(value)) == value


def test_plain_values_are_written_in_the_plain_form():
    xml = params.to_xml({"k": "v"})
    assert '<parameter id="k">v</parameter>' in xml


def test_non_string_values_are_written_as_json_in_xml():
    assert '<parameter id="_">' in params.to_xml({"k": 1})


@pytest.mark.parametrize("doc, words", [
    (b"<instance><parameter id='a'>1</parameter>", "malformed XML"),
    (b"<other/>", "root element must be <instance>"),
    (b"<instance><param id='a'>1</param></instance>", "unexpected <param>"),
    (b"<instance><parameter>1</parameter></instance>", "without an id"),
    (b"<instance><parameter id='a'>1</parameter><parameter id='a'>2</parameter></instance>",
     "given twice"),
    (b"<instance><parameter id='a'><b/></parameter></instance>", "must hold text"),
    (b"<instance><parameter id='_'>[1]</parameter></instance>", "expected a JSON object"),
    (b"<instance><parameter id='_'>{nope</parameter></instance>", "invalid JSON"),
    (b"<instance><parameter id='_'>{}</parameter><parameter id='b'>1</parameter></instance>",
     "single <parameter"),
    (b"", "empty document"),
])
def test_bad_documents_are_refused_with_one_line(doc, words):
    with pytest.raises(ParameterError) as info:
        params.parse_xml(doc)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_billion_laughs_is_refused_without_expanding():
    doc = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<instance><parameter id="a">&lol2;</parameter></instance>"""
    with pytest.raises(ParameterError, match="DOCTYPE"):
        params.parse_xml(doc)


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("TOP SECRET")
    doc = f"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>
<instance><parameter id="a">&xxe;</parameter></instance>"""
    with pytest.raises(ParameterError) as info:
        params.parse_xml(doc)
    assert "TOP SECRET" not in str(info.value)


def test_undeclared_entity_reference_is_refused():
    with pytest.raises(ParameterError):
        params.parse_xml(b"<instance><parameter id='a'>&nope;</parameter></instance>")


def test_oversized_document_is_refused_before_parsing():
    big = b"<instance><parameter id='a'>" + b"x" * (params.MAX_BYTES + 1) + b"</parameter></instance>"
    with pytest.raises(ParameterError, match="more than"):
        params.parse_xml(big)


def test_pairs_need_an_equal_sign_and_unique_keys():
    assert params.parse_pairs(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ParameterError, match="KEY=VALUE"):
        params.parse_pairs(["port"])
    with pytest.raises(ParameterError, match="twice"):
        params.parse_pairs(["a=1", "a=2"])
