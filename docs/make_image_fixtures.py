"""Writes the JPEG fixtures the image tests decode, with an encoder other than the library's.

    python docs/make_image_fixtures.py Tests/Fixtures    (needs Pillow)

Each image is a closed-form pattern the tests compute again:
    rgb  64×48: R = 4x, G = 5y, B = 128 + 2(x − y), clamped to 0…255
    gray 40×30: 6x + 3y, clamped
"""
import sys
from PIL import Image

def clamp(v):
    return max(0, min(255, v))

out = sys.argv[1] if len(sys.argv) > 1 else "Tests/Fixtures"
rgb = Image.new("RGB", (64, 48))
rgb.putdata([(clamp(4 * x), clamp(5 * y), clamp(128 + 2 * (x - y))) for y in range(48) for x in range(64)])
rgb.save(f"{out}/pattern-rgb.jpg", quality=95, subsampling=0)
rgb.save(f"{out}/pattern-rgb-420.jpg", quality=90, subsampling=2)
rgb.save(f"{out}/pattern-rgb-progressive.jpg", quality=95, progressive=True)
gray = Image.new("L", (40, 30))
gray.putdata([clamp(6 * x + 3 * y) for y in range(30) for x in range(40)])
gray.save(f"{out}/pattern-gray.jpg", quality=95)
cmyk = rgb.convert("CMYK")
cmyk.save(f"{out}/pattern-cmyk.jpg", quality=95)
