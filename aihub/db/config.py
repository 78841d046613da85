"""Tortoise configuration built from settings (also the entry point aerich reads)."""

from __future__ import annotations

from typing import Any

from aihub.settings import Settings, get_settings

MODELS = ["aihub.db.models", "aerich.models"]


def tortoise_config(settings: Settings) -> dict[str, Any]:
    url = settings.resolved_database_url
    return {
        "connections": {"default": url},
        "apps": {"models": {"models": MODELS, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


TORTOISE_ORM = tortoise_config(get_settings())
