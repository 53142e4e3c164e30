"""Effective job parameters: built-in defaults, merged layers, validation (pure)."""

from __future__ import annotations

from typing import Any

DEFAULT_PROMPT = (
    "The figure in the centre of the vertical frame slowly turns a full 360 degrees in place, "
    "smooth steady camera, soft even lighting, the background stays still"
)
# As the product ships them today (the defaults inherited from its first proxy client).
DEFAULT_PARAMS: dict[str, Any] = {
    "model_name": "kling-v1",
    "mode": "pro",
    "duration": 5,
    "cfg_scale": 0.5,
    "aspect_ratio": "9:16",
    "negative_prompt": "模糊, 低质量, 变形, 失真, 抖动, 噪点",
    "prompt": DEFAULT_PROMPT,
}
MODES = ("std", "pro", "4k")
ASPECT_RATIOS = ("9:16", "16:9", "1:1")
MOTIONS = ("auto", "zoom", "pan", "sway", "turntable")
KNOWN_KEYS = frozenset(DEFAULT_PARAMS) | {"motion", "image_url"}
PROMPT_LIMIT = 2500


class ParamError(ValueError):
    """A parameter that is not acceptable; the message names the key, value and reason."""


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Normalised copy of `params` (types coerced), or ParamError."""
    out = dict(params)
    unknown = set(out) - KNOWN_KEYS
    if unknown:
        raise ParamError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(KNOWN_KEYS))}"
        )
    for key in ("prompt", "negative_prompt"):
        if key in out:
            if not isinstance(out[key], str):
                raise ParamError(f"{key} = {out[key]!r}: must be text")
            if len(out[key]) > PROMPT_LIMIT:
                raise ParamError(f"{key} has {len(out[key])} characters; at most {PROMPT_LIMIT}")
    if "duration" in out:
        try:
            duration = float(out["duration"])
        except (TypeError, ValueError):
            raise ParamError(
                f"duration = {out['duration']!r}: must be a number of seconds"
            ) from None
        if not (duration.is_integer() and 3 <= duration <= 15):
            raise ParamError(f"duration = {out['duration']!r}: must be whole seconds, 3 to 15")
        out["duration"] = int(duration)
    if "cfg_scale" in out:
        try:
            cfg = float(out["cfg_scale"])
        except (TypeError, ValueError):
            raise ParamError(f"cfg_scale = {out['cfg_scale']!r}: must be a number") from None
        if not 0 <= cfg <= 1:
            raise ParamError(f"cfg_scale = {cfg}: must be between 0 and 1")
        out["cfg_scale"] = cfg
    if "mode" in out and out["mode"] not in MODES:
        raise ParamError(f"mode = {out['mode']!r}: must be one of {', '.join(MODES)}")
    if "aspect_ratio" in out and out["aspect_ratio"] not in ASPECT_RATIOS:
        raise ParamError(
            f"aspect_ratio = {out['aspect_ratio']!r}: must be one of {', '.join(ASPECT_RATIOS)}"
        )
    if "motion" in out and out["motion"] not in MOTIONS:
        raise ParamError(f"motion = {out['motion']!r}: must be one of {', '.join(MOTIONS)}")
    if "model_name" in out and (not isinstance(out["model_name"], str) or not out["model_name"]):
        raise ParamError(f"model_name = {out['model_name']!r}: must be a model name")
    return out


def effective(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults, then each layer in order of increasing strength (config, preset, sidecar)."""
    merged = dict(DEFAULT_PARAMS)
    for layer in layers:
        if layer:
            merged.update({k: v for k, v in layer.items() if v is not None})
    return validate(merged)
