"""Draws sample.png, the demo image that ships with clipasso (MIT, like the project).

A simple, recognisable object with clear outlines and some shading: a mug of coffee on a
saucer, in front of a soft background. Run it from this folder to redraw the file.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 512, 384


def draw() -> Image.Image:
    """The sample picture."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (236, 230, 218))
    draw = ImageDraw.Draw(image)
    for y in range(HEIGHT):  # a soft vertical gradient: wall above, table below
        shade = 236 - int(40 * y / HEIGHT) if y < 250 else 180 - int(30 * (y - 250) / 134)
        draw.line([(0, y), (WIDTH, y)], fill=(shade, shade - 8, shade - 22))
    # shadow on the table
    shadow = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(shadow).ellipse([130, 292, 420, 352], fill=120)
    image.paste((90, 80, 70), mask=shadow.filter(ImageFilter.GaussianBlur(12)))
    # saucer
    draw.ellipse([110, 268, 410, 336], fill=(250, 250, 252), outline=(60, 60, 70), width=4)
    draw.ellipse([170, 282, 350, 318], fill=(225, 226, 232), outline=(120, 120, 130), width=2)
    # mug body
    draw.rectangle([180, 120, 340, 300], fill=(196, 58, 48))
    draw.ellipse([180, 280, 340, 316], fill=(196, 58, 48))
    for x in range(180, 341):  # shading across the body
        light = max(0.0, 1.0 - abs(x - 235) / 120)
        colour = (int(150 + 80 * light), int(40 + 40 * light), int(36 + 30 * light))
        draw.line([(x, 120), (x, 296)], fill=colour)
    draw.line([(180, 120), (180, 298)], fill=(60, 20, 20), width=4)
    draw.line([(340, 120), (340, 298)], fill=(60, 20, 20), width=4)
    draw.arc([180, 280, 340, 316], 0, 180, fill=(60, 20, 20), width=4)
    # handle
    draw.arc([300, 150, 400, 260], -80, 80, fill=(60, 20, 20), width=26)
    draw.arc([305, 155, 395, 255], -75, 75, fill=(190, 60, 50), width=14)
    # rim and coffee
    draw.ellipse([180, 100, 340, 140], fill=(240, 236, 230), outline=(60, 20, 20), width=4)
    draw.ellipse([192, 108, 328, 134], fill=(92, 54, 32))
    # steam
    for offset in (-30, 0, 30):
        x = 260 + offset
        points = [(x + 10 * ((i % 2) * 2 - 1), 90 - 14 * i) for i in range(5)]
        draw.line(points, fill=(150, 150, 150), width=5, joint="curve")
    return image


if __name__ == "__main__":
    draw().save(Path(__file__).with_name("sample.png"), optimize=True)
