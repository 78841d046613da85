"""Pure domain rules: spec v1, statuses, DAG algorithms. No I/O here."""
