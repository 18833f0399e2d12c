"""Provider usage shapes: one module per provider family, and stream folding (pure)."""
