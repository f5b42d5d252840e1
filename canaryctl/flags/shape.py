"""The shape a flag in a file-data-source file must have before canaryctl reads its split.

The SDK's file format is JSON that anyone can edit. A `fallthrough.variation` of "x" or a
`variations` that is not a list is a broken file (exit 2, naming the field), not a crash in
the code that reads weights. Fields canaryctl does not read are left to the SDK.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from canaryctl.errors import FlagMismatch

__all__ = ["check_flag_shape"]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _WeightedVariation(_Loose):
    variation: StrictInt = Field(ge=0)
    weight: StrictInt = Field(default=0, ge=0, le=100_000)


class _Rollout(_Loose):
    variations: list[_WeightedVariation] = Field(default_factory=list)


class _Fallthrough(_Loose):
    variation: StrictInt | None = Field(default=None, ge=0)
    rollout: _Rollout | None = None


class _Target(_Loose):
    values: list[Any] = Field(default_factory=list)


class _Flag(_Loose):
    on: StrictBool = False
    version: StrictInt = Field(default=1, ge=0)
    variations: list[Any] = Field(default_factory=list)
    fallthrough: _Fallthrough | None = None
    targets: list[_Target] | None = None
    rules: list[Any] | None = None


def check_flag_shape(path: object, key: str, flag: dict[str, Any]) -> None:
    """FlagMismatch naming the first field of flag `key` that canaryctl could not read."""
    try:
        shape = _Flag.model_validate(flag)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        raise FlagMismatch(f"{path}: flags.{key}.{where}: {error['msg']}") from None
    if "variation" in (flag.get("fallthrough") or {}) and flag["fallthrough"]["variation"] is None:
        raise FlagMismatch(f"{path}: flags.{key}.fallthrough.variation: must be a number, not null")
    fallthrough = shape.fallthrough or _Fallthrough()
    used = [fallthrough.variation] if fallthrough.variation is not None else []
    used += [v.variation for v in (fallthrough.rollout or _Rollout()).variations]
    for index in used:
        if index >= len(shape.variations):
            raise FlagMismatch(
                f"{path}: flags.{key}.fallthrough: variation {index} does not exist "
                f"(the flag has {len(shape.variations)} variations)"
            )
