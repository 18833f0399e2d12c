"""The `import` edge: usage log files of many formats read into the ledger (`formats`, `run`)."""
