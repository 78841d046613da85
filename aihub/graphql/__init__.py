"""The GraphQL API (SPEC.md §7): a Strawberry schema whose resolvers are thin adapters over ``aihub.services``.

``schema.py`` merges the per-area operation classes (``auth``, ``workflows``, ``runs``, ``admin``, ``catalog``,
``live``) into one schema; ``view.py`` serves it over HTTP and ``graphql-transport-ws``; ``context.py`` holds the
caller and the per-operation DataLoaders of ``loaders.py``.
"""
