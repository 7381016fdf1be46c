"""A script's inline metadata: the PEP 723 `# /// script` block (`dependencies`,
`requires-python`), read as the PEP's reference implementation reads it.

Example::

    # /// script
    # requires-python = ">=3.11"
    # dependencies = ["requests<3", "rich"]
    # ///
"""

from __future__ import annotations

import io
import re
import tokenize
import tomllib
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

# The regular expression of PEP 723's reference implementation.
BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


class InlineMetadataError(ValueError):
    """The block is there but cannot be used; the message says why (in English, from the
    parser), the line it starts on is `line`."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class InlineMetadata:
    dependencies: tuple[str, ...] = ()
    requires_python: str | None = None


def source_text(data: bytes) -> str:
    """The file as Python reads it: a PEP 263 coding line or a BOM, else UTF-8."""
    try:
        encoding, _lines = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    return data.decode(encoding, errors="replace")


def read_inline_metadata(data: bytes) -> InlineMetadata:
    """The `script` block of a Python file; an empty one when there is none."""
    text = source_text(data).replace("\r\n", "\n")
    blocks = [m for m in BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        return InlineMetadata()
    line = text.count("\n", 0, blocks[0].start()) + 1
    if len(blocks) > 1:
        raise InlineMetadataError("more than one '# /// script' block", line)
    content = "".join(
        row[2:] if row.startswith("# ") else row[1:]
        for row in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        table = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise InlineMetadataError(f"not valid TOML: {exc}", line) from None
    dependencies = table.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise InlineMetadataError("'dependencies' must be a list of strings", line)
    for text_req in dependencies:
        try:
            if Requirement(text_req).url:  # from the index only, as the requirements field
                raise InvalidRequirement("a name and versions from the package index, not a URL")
        except InvalidRequirement as exc:
            raise InlineMetadataError(
                f"{text_req!r} is not a valid requirement: {exc}", line
            ) from None
    requires = table.get("requires-python")
    if requires is not None:
        if not isinstance(requires, str):
            raise InlineMetadataError("'requires-python' must be a string", line)
        try:
            SpecifierSet(requires)
        except InvalidSpecifier as exc:
            raise InlineMetadataError(f"'requires-python' is not valid: {exc}", line) from None
    return InlineMetadata(tuple(d.strip() for d in dependencies), requires)
