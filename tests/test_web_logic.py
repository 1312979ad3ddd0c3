"""The web's pure decisions: the request form from a JSON Schema and back, the
sign-in throttle, where a sign-in may send you, the SVG plots."""

import datetime as dt

import pytest

from slapnode.master.web import forms, plots, render, sessions
from slapnode.errors import ParameterError

SCHEMA = {
    "type": "object",
    "required": ["project"],
    "properties": {
        "project": {"type": "string", "title": "Project URL", "description": "Where to attach."},
        "cpus": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1},
        "share": {"type": "number", "maximum": 100},
        "idle-only": {"type": "boolean", "default": False},
        "keep-on": {"type": "boolean", "default": True},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "extra": {"type": "object"},
    },
}


def test_fields_follow_the_schema():
    fields = {f.name: f for f in forms.fields_of(SCHEMA)}
    assert [f.name for f in forms.fields_of(SCHEMA)] == list(SCHEMA["properties"])
    assert fields["project"].label == "Project URL" and fields["project"].required
    assert fields["project"].help == "Where to attach."
    assert (fields["cpus"].kind, fields["cpus"].minimum, fields["cpus"].maximum) == ("integer", 1, 64)
    assert fields["idle-only"].kind == "checkbox" and fields["mode"].options == ["fast", "slow"]
    assert fields["extra"].kind == "json" and fields["keep-on"].default is True
    assert fields["idle-only"].input_id == "p-idle-only"
    assert forms.fields_of(None) == [] and forms.fields_of({"properties": []}) == []


def test_form_values_become_plain_parameters_and_back():
    fields = forms.fields_of(SCHEMA)
    posted = {"project": " https://p.example ", "cpus": "4", "share": "", "idle-only": "true",
              "mode": "fast", "extra": ""}          # keep-on unchecked: its default is true
    params = forms.params_from_form(fields, posted)
    assert params == {"project": "https://p.example", "cpus": "4", "idle-only": "true",
                      "keep-on": "false", "mode": "fast"}
    values, extras = forms.form_from_params(fields, {**params, "unknown": "x"})
    assert values["idle-only"] is True and values["keep-on"] is False and values["cpus"] == "4"
    assert values["share"] == "" and extras == ["unknown"]
    assert forms.form_from_params(fields, {})[0]["keep-on"] is True      # defaults shown


def test_a_structured_value_makes_the_json_form():
    fields = forms.fields_of(SCHEMA)
    params = forms.params_from_form(fields, {"project": "p", "cpus": "2", "extra": '{"a": [1]}'})
    assert params == {"project": "p", "cpus": 2, "extra": {"a": [1]}, "keep-on": False}
    xml = forms.to_xml(params)
    assert '<parameter id="_">' in xml and forms.from_xml(xml) == params
    with pytest.raises(forms.FormError) as caught:
        forms.params_from_form(fields, {"extra": "{not json"})
    assert list(caught.value.fields) == ["extra"]


def test_xml_either_way_and_which_side_wins():
    fields = forms.fields_of(SCHEMA)
    assert forms.to_xml({}) == "<instance></instance>"
    slapos = '<?xml version="1.0"?>\n<instance><parameter id="project">p</parameter></instance>'
    assert forms.from_xml(slapos) == {"project": "p"}
    with pytest.raises(ParameterError):
        forms.from_xml("<instance><parameter>")
    shown = "<instance></instance>"
    # no script: an edited XML wins; an untouched one leaves the form in charge
    assert forms.choose({"project": "form"}, fields, slapos, shown, "") == ({"project": "p"}, "xml")
    assert forms.choose({"project": "form"}, fields, shown, shown, "")[0]["project"] == "form"
    # the script says which side the user edited last
    assert forms.choose({"project": "form"}, fields, slapos, shown, "form")[1] == "form"


def test_throttle_counts_failures_per_name_and_per_address():
    throttle = sessions.Throttle(per_name=3, per_address=5, window=60)
    for i in range(3):
        assert throttle.wait("Ada", "1.2.3.4", now=i) == 0
        throttle.failed("Ada", "1.2.3.4", now=i)
    assert throttle.wait("ada", "5.6.7.8", now=10) == pytest.approx(50)    # the name, anywhere
    assert throttle.wait("grace", "1.2.3.4", now=10) == 0
    throttle.failed("grace", "1.2.3.4", now=11)
    throttle.failed("bob", "1.2.3.4", now=12)
    assert throttle.wait("carol", "1.2.3.4", now=13) == pytest.approx(47)  # the address
    assert throttle.wait("ada", "9.9.9.9", now=61) == 0                  # the window moved on
    throttle.succeeded("grace")
    assert "wait 1 minute " in sessions.refuse_for(30).message
    assert sessions.refuse_for(30).status == 429


def test_sign_in_sends_you_to_this_site_only():
    assert render.safe_next("/services/x?owner=y") == "/services/x?owner=y"
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "", None, "services"):
        assert render.safe_next(target) == "/services"


def test_csrf_comparison():
    assert sessions.same("abc", "abc")
    assert not sessions.same("abc", "abd") and not sessions.same("", "") and not sessions.same("a", None)


def test_plots_are_escaped_svg_without_style_attributes():
    since = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    until = since + dt.timedelta(hours=1)
    series = [{"at": (since + dt.timedelta(minutes=m)).isoformat(), "cpu_seconds": 30.0,
               "memory_mb": 100 + m, "disk_mb": 5, "net_in_bytes": 1000, "net_out_bytes": 0}
              for m in (0, 1, 2)]
    cpu = plots.values(series, "cpu")
    assert [round(v) for _m, v in cpu] == [50, 50]          # 30 s of CPU per minute: half a core
    svg = plots.chart(plots.values(series, "memory"), "memory", since, until, title="<b>mem</b>")
    assert svg.startswith("<svg") and "<polyline" in svg and "&lt;b&gt;mem&lt;/b&gt;" in svg
    assert "style=" not in svg and "<script" not in svg
    empty = plots.chart([], "disk", since, until)
    assert "no data yet" in empty and 'role="img"' in empty
    hourly = [{"hour": since.isoformat(), "cpu_seconds": 1800.0}]
    assert plots.values(hourly, "cpu") == [(since, 50.0)]
