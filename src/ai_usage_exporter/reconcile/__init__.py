"""Reconciliation with the providers' bills: OpenAI's and Anthropic's admin reports
fetched into the ledger and compared, per closed UTC day and model, with what the
sidecar recorded (see compare.py). An edge: nothing below imports it."""
