"""Writes cmyk.jpg, the CMYK JPEG of ImageDecoderTests (ImageSharp 2.1 cannot write CMYK JPEGs).

Run with Debian's python3-pil: /usr/bin/python3 make_cmyk_jpeg.py
16x16 pixels: the left half RGB (220, 40, 40), the right half RGB (30, 60, 200), converted to CMYK by Pillow
(C = 255 - R, M = 255 - G, Y = 255 - B, K = 0) and saved with its Adobe marker (inverted CMYK, as Photoshop writes).
"""
from PIL import Image

image = Image.new("RGB", (16, 16))
for y in range(16):
    for x in range(16):
        image.putpixel((x, y), (220, 40, 40) if x < 8 else (30, 60, 200))
image.convert("CMYK").save("cmyk.jpg", quality=100, subsampling=0)
