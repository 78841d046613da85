"""Tortoise configuration built from settings (also the entry point aerich reads)."""

from __future__ import annotations

from typing import Any

from aihub.settings import Settings, get_settings

MODELS = ["aihub.db.models", "aerich.models"]


def tortoise_config(settings: Settings, *, aerich: bool = True) -> dict[str, Any]:
    """``aerich``: with aerich's own model (its migration table), which only migrating needs; importing it
    imports all of aerich (about a fifth of ``aihub run``'s start-up)."""
    url = settings.resolved_database_url
    models = MODELS if aerich else [m for m in MODELS if not m.startswith("aerich.")]
    return {
        "connections": {"default": url},
        "apps": {"models": {"models": models, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


TORTOISE_ORM = tortoise_config(get_settings())
