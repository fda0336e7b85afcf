"""Settings for azora-model-backend (environment variables prefixed ``MODEL_BACKEND_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODEL_BACKEND_", extra="ignore", frozen=True)

    # Names this process in responses (`system_fingerprint`, the `x-azora-instance` header) and
    # in metrics, so two instances behind one route can be told apart.
    instance_name: str = Field(default="local", min_length=1, max_length=63)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"

    # Completion length when the request names none, and the most a request may ask for.
    default_max_tokens: int = Field(default=128, ge=1)
    max_tokens_limit: int = Field(default=1024, ge=1)
    # Longest prompt (after the chat template) accepted; the model's context is 8192 tokens.
    max_prompt_tokens: int = Field(default=4096, ge=16, le=8192)
    # Sampling temperature when the request names none. OpenAI's default is 1.0; greedy (0.0)
    # makes answers repeatable, which is what a demo and its tests want.
    default_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    # Most inputs in one embeddings request (OpenAI's limit).
    max_embedding_inputs: int = Field(default=2048, ge=1)
    # Largest request body accepted (413 beyond it).
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
