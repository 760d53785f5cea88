"""Change over time: `vision change` compares `vision infer` jobs of the same area at
different dates (the rules: `inference.change.rules`; the table: `vision.contracts.changes`)."""
