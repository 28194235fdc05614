"""The selected ``<image>`` elements and their original bitmap bytes.

The daemon gets the bitmap exactly as it was imported, never a re-rendering of the selection
(which would bake in the crop and the transform). Embedded images are decoded from their
``data:`` URI. Linked images are looked up the way Inkscape needs: Inkscape hands the
extension a temporary copy of the document and rewrites relative links so they resolve from
that copy's folder, so the input file's folder comes first, then the absolute path Inkscape
remembers in ``sodipodi:absref``, then the saved document's folder.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes, urlsplit
from urllib.request import url2pathname

import inkex

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
ABSREF = "{http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd}absref"


class ImageError(Exception):
    """A selected image whose bitmap cannot be had; the message is for the user."""


@dataclass(frozen=True)
class SourceImage:
    """One selected image: the element, its bitmap bytes and a name for labels and jobs."""

    element: inkex.BaseElement
    data: bytes
    name: str


def split_selection(
    selected: list[inkex.BaseElement],
) -> tuple[list[inkex.BaseElement], list[inkex.BaseElement]]:
    """(images, everything else), each in selection order."""
    images = [element for element in selected if isinstance(element, inkex.Image)]
    others = [element for element in selected if not isinstance(element, inkex.Image)]
    return images, others


def display_name(element: inkex.BaseElement) -> str:
    """What the user knows the photo by: its label, else the linked file's name (an import
    gives ids like "image123"), else its id."""
    label = (element.get("inkscape:label") or "").strip()
    if label:
        return label
    href = (element.get(XLINK_HREF) or element.get("href") or "").strip()
    path = _href_path(href) if href and not href.startswith("data:") else None
    name = os.path.basename(path.replace("\\", "/").rstrip("/")) if path else ""
    return name or element.get("id") or "image"


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:`` URI (base64 or percent-encoded; whitespace is ignored)."""
    head, comma, payload = uri.partition(",")
    if not comma:
        raise ImageError("its data: URI has no data")
    if head.endswith(";base64"):
        try:
            return base64.b64decode("".join(unquote(payload).split()), validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("its embedded data is not valid base64") from None
    return unquote_to_bytes(payload)


def _href_path(href: str) -> str | None:
    """A local file path from an href (plain path or file: URL); None for other schemes."""
    parts = urlsplit(href)
    if parts.scheme == "file":
        return url2pathname(parts.path)
    if len(parts.scheme) > 1:  # one letter is a Windows drive, not a scheme
        return None
    return unquote(href)


def candidate_paths(
    href: str, absref: str | None, input_file: str | None, document_path: str | None
) -> list[str]:
    """Where a linked image may be, in the order Inkscape's own embed extension tries."""
    path = _href_path(href)
    candidates: list[str] = []
    if path is not None:
        if os.path.isabs(path):
            candidates.append(path)
        elif input_file:
            candidates.append(os.path.join(os.path.dirname(os.path.abspath(input_file)), path))
    if absref:
        candidates.append(absref)
    if path is not None and not os.path.isabs(path) and document_path:
        candidates.append(os.path.join(os.path.dirname(document_path), path))
    return list(dict.fromkeys(candidates))


def read_image(
    element: inkex.BaseElement, input_file: str | None, document_path: str | None
) -> SourceImage:
    """The bitmap of one ``<image>``; raises ImageError naming the image and the problem."""
    name = display_name(element)
    href = (element.get(XLINK_HREF) or element.get("href") or "").strip()
    try:
        if not href:
            raise ImageError("it has no bitmap (no href)")
        if href.startswith("data:"):
            data = decode_data_uri(href)
        else:
            data = _read_linked(href, element.get(ABSREF), input_file, document_path)
        if not data:
            raise ImageError("its bitmap is empty")
    except ImageError as exc:
        raise ImageError(f"Image '{name}': {exc}") from None
    return SourceImage(element, data, name)


def _read_linked(
    href: str, absref: str | None, input_file: str | None, document_path: str | None
) -> bytes:
    if _href_path(href) is None:
        raise ImageError(
            f"it links to {href!r}, which is not a local file; embed it first "
            "(Extensions > Images > Embed Images)"
        )
    tried = candidate_paths(href, absref, input_file, document_path)
    for path in tried:
        if os.path.isfile(path):
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except OSError as exc:
                raise ImageError(f"its linked file {path} cannot be read: {exc}") from None
    raise ImageError(
        f"its linked file {href!r} was not found (looked in: {', '.join(tried) or 'nowhere'}); "
        "fix the link or embed the image"
    )
