"""Rows become requests: building, templates, token counts, the plan, the estimate."""
