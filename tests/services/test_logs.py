"""Structured logs: one JSON object per line, extra fields kept, quotes escaped."""

from __future__ import annotations

import json
import logging

from twinmpc.services.logs import JsonFormatter


def test_json_line_with_extras_and_quotes():
    record = logging.LogRecord("twinmpc.aggregator", logging.WARNING, __file__, 1, 'refused: "%s"', ("bad seal",), None)
    record.task = "abc"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == 'refused: "bad seal"'
    assert doc["level"] == "WARNING" and doc["logger"] == "twinmpc.aggregator" and doc["task"] == "abc"


def test_exception_is_included():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in doc["exc"]
