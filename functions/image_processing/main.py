# FunctionBench "image processing": a generated picture through Pillow's usual operations (flip,
# rotate, blur, contour, grayscale, resize), each result encoded as JPEG (Pillow, from
# requirements.txt). Arguments: width, height (default 512 x 384).
import io
import time

from PIL import Image, ImageDraw, ImageFilter, ImageOps


def picture(width, height):
    # A gradient with shapes on it: edges for the filters, colours for the grayscale.
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for i in range(12):
        x, y = (i * 37) % width, (i * 53) % height
        draw.ellipse((x, y, x + width // 6, y + height // 6), fill=(255 - i * 20, i * 20, 128))
        draw.rectangle((y % width, x % height, y % width + 20, x % height + 30), outline=(0, 0, 255), width=3)
    return img


def jpeg(img):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def main(args):
    width, height = int(args.get("width", 512)), int(args.get("height", 384))
    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise ValueError("width and height must be in 8..8192")
    img = picture(width, height)
    t = time.perf_counter()
    results = {
        "flip": ImageOps.flip(img),
        "mirror": ImageOps.mirror(img),
        "rotate": img.rotate(90, expand=True),
        "blur": img.filter(ImageFilter.GaussianBlur(3)),
        "contour": img.filter(ImageFilter.CONTOUR),
        "grayscale": ImageOps.grayscale(img),
        "resize": img.resize((width // 2, height // 2)),
    }
    out = {name: {"size": list(r.size), "mode": r.mode, "jpeg_bytes": len(jpeg(r))} for name, r in results.items()}
    ms = (time.perf_counter() - t) * 1000
    return {"body": {"input": [width, height], "outputs": out, "ms": round(ms, 3)}}
