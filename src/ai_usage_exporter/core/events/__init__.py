"""The usage event: schema (`model`), field validation (`validate`), token counts from
provider sources (`usage`), the query-summary line (`summary`) and a request's events
(`parse`). Import from the module that defines a name."""
