"""The try-it page generated from the contract: an input per feature, prefilled with the example,
contract strings escaped, nothing from another host, and a CSP that lets exactly its own code run."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser

from raypipe.data.schema import ColumnSpec, Contract, LabelSpec
from raypipe.serve.page import render_page

EVIL = '</script><script>alert("x")</script>'
CONTRACT = Contract(
    features=[
        ColumnSpec("distance", "numeric", "int16", min=17, max=4983),
        ColumnSpec("carrier", "categorical", "string", categories=["UA", "<script>", 'B6"&'], nullable=False),
        ColumnSpec("weekend", "boolean", "bool"),
        ColumnSpec("sched", "timestamp", "timestamp[us]"),
        ColumnSpec("gate", "categorical", "int32", categories=["7", "12"]),
        ColumnSpec(EVIL, "numeric", "float64", min=0.5, max=2.5),
    ],
    label=LabelSpec("delayed", "binary", "bool", classes=["false", "true"]),
    example={"distance": 1400, "carrier": "<script>", "weekend": True, "sched": "2013-01-01T05:15:00", "gate": 12}
    | {EVIL: None},
)


class _Page(HTMLParser):
    """Elements by id, labels by their ``for``, options per select, and the text of each script/style."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.by_id: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.labels: dict[str, str] = {}
        self.options: dict[str, list[tuple[str, bool]]] = {}
        self.blocks: list[tuple[str, dict[str, str | None], str]] = []
        self._select: str | None = None
        self._label: str | None = None
        self._block: tuple[str, dict[str, str | None]] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.by_id[a["id"]] = (tag, a)
        if tag == "select":
            self._select = a["id"]
            self.options[a["id"]] = []
        elif tag == "option":
            self.options[self._select].append((a["value"], "selected" in a))
        elif tag == "label":
            self._label = a["for"]
            self.labels[self._label] = ""
        elif tag in ("script", "style"):
            self._block = (tag, a)
            self.blocks.append((tag, a, ""))

    def handle_endtag(self, tag):
        self._select = None if tag == "select" else self._select
        self._label = None if tag == "label" else self._label
        self._block = None if tag in ("script", "style") else self._block

    def handle_data(self, data):
        if self._label:
            self.labels[self._label] += data
        if self._block:
            tag, a, text = self.blocks[-1]
            self.blocks[-1] = (tag, a, text + data)


def test_every_feature_has_a_labelled_input_prefilled_with_the_example() -> None:
    page = _Page(render_page(CONTRACT, "flights", "3"))
    for i, f in enumerate(CONTRACT.features):
        tag, attrs = page.by_id[f"f{i}"]
        assert page.labels[f"f{i}"] == f.name and attrs["name"] == f.name
        assert tag == ("select" if f.kind in ("categorical", "boolean") else "input"), f.name
    assert page.by_id["f0"][1]["type"] == "number" and page.by_id["f0"][1]["value"] == "1400"
    assert page.options["f1"] == [("UA", False), ("<script>", True), ('B6"&', False)]  # never null: no empty option
    assert page.options["f2"] == [("", False), ("true", True), ("false", False)]
    assert page.by_id["f3"][1]["value"] == "2013-01-01T05:15:00"
    assert ("12", True) in page.options["f4"]  # an int-coded level matches its string category
    assert page.by_id["f5"][1]["value"] == ""  # null in the example: left empty


def test_contract_strings_are_escaped_and_data_reaches_the_script_intact() -> None:
    text = render_page(CONTRACT, '<img src=x onerror="alert(1)">', "<i>1</i>")
    page = _Page(text)
    scripts = [(a, body) for tag, a, body in page.blocks if tag == "script"]
    assert len(scripts) == 2 and text.count("<script") == 2  # the data block and the page's own code
    assert "<img" not in text and "<i>" not in text and "&lt;img src=x onerror=&quot;" in text
    data = json.loads(scripts[0][1])
    assert scripts[0][0]["type"] == "application/json"
    assert [f["name"] for f in data["features"]] == CONTRACT.feature_names


def test_nothing_comes_from_another_host_and_the_csp_hashes_match_the_inline_code() -> None:
    text = render_page(CONTRACT, "flights", "3")
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I)
    assert not re.search(r"\ssrc=|@import|url\(", text)  # no external script, image, font or stylesheet
    csp = _csp(text)
    for tag, attrs, body in _Page(text).blocks:
        if attrs.get("type") == "application/json":
            continue  # data, not run: needs no permission
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp, tag
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp


def _csp(text: str) -> str:
    return re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1)
