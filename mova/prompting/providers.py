"""Provider selection from a name or the environment.

``MOVA_PROMPT_PROVIDER`` picks one of ``PROVIDER_NAMES``. When it is unset, a configured server
(``MOVA_PROMPT_BASE_URL``) means "openai", a configured folder (``MOVA_PROMPT_PATH``) means "transformers",
and otherwise the offline provider is used. Each provider reads its own settings (see its module).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mova.prompting.base import PromptProvider
from mova.prompting.offline import OfflineProvider

PROVIDER_NAMES = ("openai", "transformers", "offline")


def configured_provider_name(env: Mapping[str, str] | None = None) -> str:
    """The provider name the environment asks for (see the module docstring)."""
    env = os.environ if env is None else env
    name = env.get("MOVA_PROMPT_PROVIDER", "").strip().lower()
    if name:
        return name
    if env.get("MOVA_PROMPT_BASE_URL", "").strip():
        return "openai"
    if env.get("MOVA_PROMPT_PATH", "").strip():
        return "transformers"
    return "offline"


def get_provider(name: str | None = None, env: Mapping[str, str] | None = None) -> PromptProvider:
    """A provider by name ("openai", "transformers", "offline") or, with no name, from the environment.

    Raises ValueError for an unknown name or a provider whose required settings are missing.
    """
    env = os.environ if env is None else env
    chosen = (name or configured_provider_name(env)).strip().lower()
    if chosen == "offline":
        return OfflineProvider()
    if chosen == "openai":
        from mova.prompting.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider.from_env(env)
    if chosen == "transformers":
        from mova.prompting.local import TransformersProvider

        return TransformersProvider.from_env(env)
    field = "provider" if name else "MOVA_PROMPT_PROVIDER"
    raise ValueError(f"{field}: {chosen!r} is not allowed; choose one of {', '.join(PROVIDER_NAMES)}")
