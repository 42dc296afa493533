"""The base of every config section: unknown keys are an error, not ignored."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section that rejects keys it does not define (a typo is an error)."""

    model_config = ConfigDict(extra="forbid")
