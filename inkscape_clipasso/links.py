"""Linked images' hrefs in the document the extension returns, made absolute.

Inkscape hands an effect a temporary copy of the document (in its temporary folder, ``/tmp``)
and rewrites every image link for that copy: as an absolute ``file://`` URI, except when the
document itself lies under the temporary folder, where the link becomes a path relative to it
(``pytest-1/photos/photo.png``). Inkscape 1.2 turns both back into the user's own links when it
reads the result. Inkscape 1.4 does not turn the relative one back: read from the document's
own folder it points nowhere, so 1.4 "fixes" it to a wrong path and opens a modal dialog
("Broken links have been changed to point to existing files.") that stops batch runs for
good. Any effect does this, Inkscape's own included. Giving such a link back as the absolute
URI, the form Inkscape itself uses for every other document, avoids both: 1.4 keeps it as it
keeps the others, 1.2 turns it back into the user's relative link as before. Only Inkscape's
own temporary copy (``ink_ext_XXXXXX.svg...``) is treated so: a document given by a path, as
in tests or on the command line, keeps its links as written.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import inkex

from inkscape_clipasso.image_source import XLINK_HREF

#: How Inkscape names the temporary copy it gives an effect (1.2 and 1.4).
INKSCAPE_COPY_PREFIX = "ink_ext_"


def _relative_file(href: str) -> str | None:
    """The relative local path an href names, or None (data:, URIs, absolute paths)."""
    if not href or href.startswith(("data:", "#")):
        return None
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(href)
    return None if os.path.isabs(path) else path


def anchor_relative_links(svg: inkex.SvgDocumentElement, input_file: str | None) -> int:
    """In Inkscape's temporary copy, rewrite every ``<image>`` link relative to the copy's
    folder that names an existing file into that file's ``file://`` URI; returns how many were
    rewritten. Links that name no file there, and any other input, are left as they are."""
    if not input_file or not os.path.basename(input_file).startswith(INKSCAPE_COPY_PREFIX):
        return 0
    folder = os.path.dirname(os.path.abspath(input_file))
    changed = 0
    for image in svg.iter("{http://www.w3.org/2000/svg}image"):
        attribute = XLINK_HREF if image.get(XLINK_HREF) is not None else "href"
        relative = _relative_file((image.get(attribute) or "").strip())
        if relative is None:
            continue
        path = Path(os.path.normpath(os.path.join(folder, relative)))  # links kept, not resolved
        if path.is_file():
            image.set(attribute, path.as_uri())
            changed += 1
    return changed
