"""The base of every solution model: strict scalars, frozen models with camelCase aliases (see ``model``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

Str = StrictStr
Int = StrictInt
Float = StrictFloat
Bool = StrictBool
Port = Annotated[StrictInt, Field(ge=0, le=65535)]


class Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        alias_generator=to_camel,
        hide_input_in_errors=True,  # never echo secrets in validation messages
    )


class Entity(Model):
    """Name, Key and optional 32-hex Id, as every NuvIoT entity has."""

    key: Str
    name: Str = ""
    id: Str | None = None
    description: Str | None = None
