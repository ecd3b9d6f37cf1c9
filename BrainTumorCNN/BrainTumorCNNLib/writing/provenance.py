"""How an output records how it was made (a Segmenter's provenance record: software, model and weights'
SHA-256, the options as they ran, the inputs and their SHA-256, the time), in the three places a
reader looks: `<case>.json` beside the label map, key/value fields of the `.seg.nrrd` header, and
attributes of the Slicer segmentation node.  The header and the node carry the same flat fields,
`BrainTumorCNN.<path>` = the JSON of the value (`fields`), which `record_of` reads back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Union

#: Prefix of every field, in the NRRD header and among the node's attributes.
PREFIX = "BrainTumorCNN."
#: Where a NRRD header ends: the first empty line (the data follows, gzip here).
_HEADER_END = b"\n\n"


def fields(record: Mapping) -> Dict[str, str]:
    """The record as flat fields: nested dicts joined by dots, every value as its JSON (one line)."""
    out: Dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        else:
            out[prefix] = json.dumps(value, separators=(",", ":"))

    for key, value in record.items():
        walk(PREFIX + key, value)
    return out


def record_of(flat: Mapping[str, str]) -> Dict[str, object]:
    """The record back from its fields (other keys ignored)."""
    record: Dict[str, object] = {}
    for key, text in flat.items():
        if not key.startswith(PREFIX):
            continue
        *parents, leaf = key[len(PREFIX):].split(".")
        node = record
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(text)
    return record


def write_json(path: Union[str, Path], record: Mapping) -> None:
    """`<case>.json`: the record as indented JSON (the caller writes it atomically, with the other outputs)."""
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def add_nrrd_fields(path: Union[str, Path], flat: Mapping[str, str]) -> None:
    """Add key/value fields (`key:=value`) to the header of a NRRD file with attached data, in place."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(_HEADER_END)
    if not data.startswith(b"NRRD") or end < 0:
        raise ValueError(f"{path} is not a NRRD file with its data attached")
    lines = b"".join(f"{key}:={_escape(value)}\n".encode("utf-8") for key, value in flat.items())
    path.write_bytes(data[:end + 1] + lines + data[end + 1:])


def read_nrrd_fields(path: Union[str, Path]) -> Dict[str, str]:
    """The key/value fields of a NRRD header (`key:=value`, unescaped)."""
    with open(path, "rb") as f:
        head = b""
        while _HEADER_END not in head:
            block = f.read(1 << 16)
            if not block:
                break
            head += block
    text = head.split(_HEADER_END, 1)[0].decode("utf-8")
    out = {}
    for line in text.splitlines()[1:]:
        if ":=" in line and not line.startswith("#"):
            key, value = line.split(":=", 1)
            out[key] = _unescape(value)
    return out


def _escape(value: str) -> str:
    """NRRD's key/value escapes: a value is one line, backslash and newline written as \\\\ and \\n."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append("\n" if value[i + 1] == "n" else value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
