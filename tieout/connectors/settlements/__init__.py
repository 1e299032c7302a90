"""Gateway settlement reports -> canonical settlement lines (one module per gateway)."""
