"""The dashboard never shows a database password, whatever characters it holds: neither in the
sidebar's URL nor in the one-line report of a database it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import dashboard

APP = Path(dashboard.__file__).resolve().parent / "app.py"


@pytest.mark.parametrize("url", [
    "postgresql://u:SECRET1/SECRET2@127.0.0.1:9/x",  # port 9 (discard): refused at once
    "postgresql://u:SECRET1%2FSECRET2@127.0.0.1:9/x",
    "postgresql://u:SECRET1?SECRET2#SECRET3@127.0.0.1:9/x",
    "postgresql://u:SECRET1/SECRET2@127.0.0.1:99x/x",  # a bad port: refused before connecting
    "postgresql://u:SECRET1/SECRET2@SECRET3@127.0.0.1:9/x",  # a second '@'
    "mysql://u:SECRET1/SECRET2@127.0.0.1/x",
    "postgresql://u@127.0.0.1:9/x?password=SECRET1&SECRET2",
])  # fmt: skip
def test_no_page_shows_a_password_of_any_shape(url, monkeypatch):
    monkeypatch.setenv("RESWEEP_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and at.error[0].value.startswith("**Cannot read the database.**")
    assert "SECRET" not in str(at._tree)
