"""The class texts a CLIP is asked about: ``(names, texts)`` from a list or from a JSON file
``{"name": "description", ...}``, checked once with one clear error for bad input.

Example::

    from vizkit.models.clip_texts import load_class_texts
    load_class_texts(["a red circle", "a blue square"])     # (names, texts), names = texts
    load_class_texts(None, "texts.json")                    # {"circle": "a red circle", ...}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..io import read_json

__all__ = ["load_class_texts"]


def load_class_texts(
    class_texts: Sequence[str] | None = None, class_texts_file: str | os.PathLike | None = None
) -> tuple[list[str], list[str]]:
    """``(names, texts)`` from a list (names = texts) or a JSON file ``{"name": "description"}``.

    Exactly one source must be given; an empty list, a malformed or empty JSON file is an error.
    """
    if (class_texts is None or len(class_texts) == 0) == (class_texts_file is None):
        if class_texts is not None and len(class_texts) == 0 and class_texts_file is None:
            raise InputError("the list of class texts is empty: give at least one text")
        raise InputError(
            "give the class texts either as a list (--class-texts) or as a JSON file "
            "(--class-texts-file), not both and not neither"
        )
    if class_texts_file is None:
        texts = [str(t) for t in class_texts]
        if any(not t.strip() for t in texts):
            raise InputError("a class text is empty")
        return texts, texts
    path = Path(class_texts_file)
    data = read_json(path, "class texts file")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InputError(
            f"class texts file {str(path)!r} must hold one JSON object "
            '{"name": "description", ...} with string names and descriptions'
        )
    if not data:
        raise InputError(f"class texts file {str(path)!r} holds no class texts")
    return list(data), list(data.values())
