"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Ground floor of the library: imports nothing from lvat_tf.
"""
import json
import os


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same directory."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str, obj, indent: int = 2, sort_keys: bool = True) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys))
