"""The command line: `ai-usage-exporter` (`main`) and the ledger commands (`commands`)."""
