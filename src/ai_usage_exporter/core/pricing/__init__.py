"""Pricing: rates and costs (`rates`), the prices file and overrides (`overrides`), the price
book that prices an event (`book`), and the `prices` command's tables (`render`). Import from
the module that defines a name."""
