"""Scenario 2's notebook parameter checks (``notebooks/02_vit_mnist_attention.ipynb``): one check per
parameter that needs more than a type (:func:`layers_ok`, :func:`heads_ok`, ...), the checks across
parameters (:func:`check_combinations`) and :func:`parse_index_list` for the ``layers`` / ``heads``
strings. The spec itself (``notebook_parameters``) stays in :mod:`.vit_mnist_attention`, where the
registry reads it.

Example::

    from vizkit.scenarios.vit_mnist_params import parse_index_list
    parse_index_list("0,2,5")   # [0, 2, 5]
"""

from __future__ import annotations

from typing import Any

__all__ = ["layers_ok", "heads_ok", "indices_ok", "statistics_images_ok", "check_combinations", "parse_index_list"]


def layers_ok(value: Any) -> str | None:
    """The check of ``layers``: a keyword, a comma-separated string of block indices or a list of ints."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("all", "last") or v.startswith("last_") or all(p.strip().lstrip("-").isdigit() for p in v.split(",")):
            return None
        return "use 'all', 'last', 'last_K', a comma-separated list of block indices like '0,2,5', or a list of ints"
    return (
        None if all(isinstance(i, int) and not isinstance(i, bool) for i in value) else "a list of block indices (ints)"
    )


def heads_ok(value: Any) -> str | None:
    """The check of ``heads``: 'all', a comma-separated string of head indices or a list of ints."""
    if isinstance(value, str):
        return (
            None
            if value.strip().lower() == "all" or all(p.strip().isdigit() for p in value.split(","))
            else "use 'all', a comma-separated list of head indices like '0,2', or a list of ints"
        )
    return (
        None
        if all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        else "a list of non-negative head indices"
    )


def parse_index_list(value: Any, keywords: tuple[str, ...] = ("all",)) -> Any:
    """'0,2,5' -> [0, 2, 5]; keywords ('all', 'last_4') and lists pass through."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in keywords or v.startswith("last"):
            return v
        return [int(p) for p in v.split(",") if p.strip()]
    return list(value)


def indices_ok(value: Any) -> str | None:
    """The check of ``indices``: non-negative test-set indices."""
    return None if all(isinstance(i, int) and i >= 0 for i in value) else "a list of non-negative test-set indices"


def statistics_images_ok(value: int) -> str | None:
    """The check of ``statistics_images``: a count of MNIST test images."""
    return None if 1 <= value <= 10000 else "must be in 1..10000 (the MNIST test set)"


def check_combinations(p: dict[str, Any]) -> dict[str, Any]:
    """The checks across parameters of the values ``p`` that passed one by one (the device is checked by the
    caller, ``check_notebook_parameters``); returns ``p``."""
    from ..notebook import ParameterError

    if p["selection"] == "indices" and not p["indices"]:
        raise ParameterError("selection='indices' needs a non-empty indices list, e.g. indices=[0, 7, 42]")
    if p["model"] not in ("mnist_vit", "zoo:mnist_vit") and not p["model_config"]:
        raise ParameterError(f"model={p['model']!r} is a checkpoint path: also set model_config to its JSON config")
    return p
