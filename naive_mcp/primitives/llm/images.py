"""Images a model made (`message.images`, e.g. asked with `modalities: ["image", "text"]`).

The agent sees each one as an MCP image content block, after the answer's text, as long as the
result's images together stay within NAIVE_MAX_IMAGE_BYTES (decoded): an image is only useful
to a model whole, and every block is read into its context. One past the limit, or one that is
not a base64 image, is left out, and the result says which and why. An image given by link (an
https:// URL rather than a data: URL) is passed on as the link. The structured content
describes every image (type, size, link, why left out) and carries no image data.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from pydantic import BaseModel, Field, PrivateAttr

from naive_mcp.registry import ImageBlock

# A link longer than this is not passed on: no real image host needs it, and the text shows it.
MAX_LINK_CHARS = 2048
_MIME_TYPE = re.compile(r"image/[\w.+-]+")


class ImageOut(BaseModel):
    """One image of the answer, described; its data (when shown) is in an image content block."""

    mime_type: str | None = None
    size_bytes: int | None = Field(default=None, description="decoded")
    url: str | None = Field(default=None, description="the image's link, when it came as one")
    left_out: str | None = Field(default=None, description="why no content block carries it")
    _block: ImageBlock | None = PrivateAttr(default=None)

    @classmethod
    def shown(cls, block: ImageBlock, size: int) -> ImageOut:
        image = cls(mime_type=block.mime_type, size_bytes=size)
        image._block = block
        return image

    @property
    def block(self) -> ImageBlock | None:
        """The image content block, when the image is shown."""
        return self._block

    def line(self, number: int) -> str | None:
        """What the text says of an image not shown as a block (None for one that is)."""
        if self.url is not None:
            return f"Image {number}: {self.url}"
        if self.left_out is None:
            return None
        what = f" ({self.mime_type}, {self.size_bytes} bytes)" if self.size_bytes is not None else ""
        return f"Image {number}{what} was left out: {self.left_out}"


def read_images(urls: Sequence[str], max_bytes: int) -> list[ImageOut]:
    """The answer's images, in order: shown while their decoded bytes together fit `max_bytes`
    (NAIVE_MAX_IMAGE_BYTES); a later, smaller image may still fit after a large one left out."""
    images: list[ImageOut] = []
    shown_bytes = 0
    for url in urls:
        if not url.startswith("data:"):
            images.append(_link(url))
            continue
        read = _decoded(url)
        if isinstance(read, str):
            images.append(ImageOut(left_out=read))
            continue
        block, size = read
        if shown_bytes + size > max_bytes:
            why = (
                f"with it the result's images would be {shown_bytes + size} bytes, past "
                f"NAIVE_MAX_IMAGE_BYTES ({max_bytes}); the operator may raise it"
            )
            images.append(ImageOut(mime_type=block.mime_type, size_bytes=size, left_out=why))
            continue
        shown_bytes += size
        images.append(ImageOut.shown(block, size))
    return images


def _link(url: str) -> ImageOut:
    if not url.startswith(("https://", "http://")):
        return ImageOut(left_out="its URL is neither a data: URL nor an http(s) link")
    if len(url) > MAX_LINK_CHARS:
        return ImageOut(left_out=f"its link is longer than {MAX_LINK_CHARS} characters")
    return ImageOut(url=url)


def _decoded(url: str) -> tuple[ImageBlock, int] | str:
    """A data: URL's image block and decoded size, or why it cannot be shown."""
    header, comma, data = url.removeprefix("data:").partition(",")
    mime_type, *parameters = header.split(";")
    mime_type = mime_type.strip().lower()
    if not comma or not _MIME_TYPE.fullmatch(mime_type):
        return f"its data: URL does not hold an image (type {mime_type[:40] or 'none'!r})"
    if "base64" not in parameters:
        return "its data: URL is not base64"
    try:
        size = len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return "its base64 data is malformed"
    return ImageBlock(data=data, mime_type=mime_type), size
