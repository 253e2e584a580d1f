# FunctionBench "video processing" (OpenCV there: read a video, grayscale each frame, write it).
# Substitute without a video codec library: frames of a moving scene generated with Pillow (from
# requirements.txt), each turned grayscale, edge-filtered and scaled, then encoded as an animated
# GIF and decoded again to count its frames. Arguments: frames (default 30), width, height
# (default 320 x 240).
import io
import time

from PIL import Image, ImageDraw, ImageFilter, ImageOps, ImageSequence


def frame(i, width, height):
    img = Image.new("RGB", (width, height), (20, 30, 60))
    draw = ImageDraw.Draw(img)
    x = (i * 7) % width
    draw.ellipse((x, height // 3, x + width // 5, height // 3 + height // 5), fill=(250, 200, 40))
    draw.rectangle((width - x - 30, 10, width - x, 40), fill=(200, 40, 90))
    return img


def main(args):
    count = int(args.get("frames", 30))
    width, height = int(args.get("width", 320)), int(args.get("height", 240))
    if not (1 <= count <= 10000 and 16 <= width <= 4096 and 16 <= height <= 4096):
        raise ValueError("frames in 1..10000, width and height in 16..4096")
    t = time.perf_counter()
    processed = []
    for i in range(count):
        gray = ImageOps.grayscale(frame(i, width, height))
        processed.append(gray.filter(ImageFilter.FIND_EDGES).resize((width // 2, height // 2)))
    buf = io.BytesIO()
    processed[0].save(buf, "GIF", save_all=True, append_images=processed[1:], duration=40, loop=0)
    encoded = buf.getvalue()
    decoded = sum(1 for _ in ImageSequence.Iterator(Image.open(io.BytesIO(encoded))))
    ms = (time.perf_counter() - t) * 1000
    return {"body": {"frames": count, "decoded_frames": decoded, "gif_bytes": len(encoded),
                     "size": [width // 2, height // 2], "ms": round(ms, 3)}}
