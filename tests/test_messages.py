"""Tests for batchrunner.prepare.messages: the columns a template names."""

from __future__ import annotations

from batchrunner.prepare.messages import template_fields


def test_template_fields_lists_each_column_once_in_order():
    """Attribute, index and nested-spec placeholders all count by their column."""
    fields = template_fields("{b} {a.real} {c[0]} {b} {d:{width}} {{literal}}")
    assert fields == ["b", "a", "c", "d", "width"]
