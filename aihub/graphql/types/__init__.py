"""GraphQL object types. Each maps one service-layer row to the API's names (SPEC.md §7); classes end in
``Type`` in Python and carry their public GraphQL name."""
