"""Settings: the YAML file, environment variables and flags resolved into `Settings`.

One module per section whose schema is large (`gateway`); `settings` holds the rest and
the resolution order. Imports only from `core`.
"""
