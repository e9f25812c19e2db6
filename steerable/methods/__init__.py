"""Methods: each sub-package exports a `MethodSpec` (see registry.py); nothing here lists them."""
