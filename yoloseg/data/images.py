"""Image files: the accepted formats, EXIF orientation, decoding, listing the images of a split, verification."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMG_FORMATS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp")
MIN_SIZE = 10  # pixels; smaller images are rejected
_EXIF_ORIENTATION = 0x0112


def is_image(path: str | Path) -> bool:
    return str(path).rsplit(".", 1)[-1].lower() in IMG_FORMATS


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded (H, W, C) image the way its EXIF orientation tag (1..8) says it should be displayed."""
    if orientation == 2:
        return img[:, ::-1].copy()
    if orientation == 3:
        return img[::-1, ::-1].copy()
    if orientation == 4:
        return img[::-1].copy()
    if orientation == 5:  # transpose (mirror along the main diagonal)
        return np.ascontiguousarray(img.swapaxes(0, 1))
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:  # transverse (mirror along the anti-diagonal)
        return np.ascontiguousarray(img[::-1, ::-1].swapaxes(0, 1))
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def read_orientation(path: str | Path) -> int:
    """The EXIF orientation tag of an image file (1 when absent or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def imread(path: str | Path, orientation: int | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 BGR, EXIF orientation applied (read from the file when None).

    16-bit images keep their high byte, grey images are expanded to 3 channels, alpha is dropped.
    Raises FileNotFoundError / ValueError with the file name when the file is missing or cannot be decoded.
    """
    img = decode(np.fromfile(str(path), np.uint8))
    if img is None:
        raise ValueError(f"{path}: cannot decode this image; re-save it as jpg or png, or delete it")
    if orientation is None:
        orientation = read_orientation(path)
    return apply_orientation(img, orientation)


def decode(buf: np.ndarray) -> np.ndarray | None:
    """cv2.imdecode (BGR, EXIF orientation not applied); a JPEG cut short is decoded with its end marker restored
    in memory (the missing part comes out grey). None when undecodable."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(buf, flags)
    if img is None and buf[:2].tobytes() == b"\xff\xd8" and buf[-2:].tobytes() != b"\xff\xd9":
        img = cv2.imdecode(np.concatenate([buf, np.array([0xFF, 0xD9], np.uint8)]), flags)
    return img


def verify_image(path: str | Path) -> tuple[tuple[int, int], int, str]:
    """Check an image file without keeping it.

    Returns ((h0, w0) after EXIF orientation, orientation tag, warning text or ""). Raises ValueError with the
    reason when the file is unusable (unknown format, unreadable, undecodable, smaller than MIN_SIZE).
    """
    from PIL import Image

    path = Path(path)
    if not is_image(path):
        raise ValueError(f"unsupported image format '{path.suffix}' (use one of {', '.join(IMG_FORMATS)})")
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = im.size
            fmt = (im.format or "").lower()
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception as e:
        raise ValueError(f"unreadable image ({type(e).__name__}: {e})") from None
    if fmt not in IMG_FORMATS and fmt != "mpo":
        raise ValueError(f"unsupported image format '{fmt}' (use one of {', '.join(IMG_FORMATS)})")
    orientation = orientation if 1 <= orientation <= 8 else 1
    if orientation >= 5:
        w, h = h, w
    if min(w, h) < MIN_SIZE:
        raise ValueError(f"image size {w}x{h} is below the {MIN_SIZE} px minimum")
    warning = ""
    if fmt in ("jpeg", "mpo") and not _jpeg_complete(path):
        # a truncated JPEG usually still decodes (the missing part grey); keep it, in memory only
        if decode(np.fromfile(str(path), np.uint8)) is None:
            raise ValueError("truncated JPEG that cannot be decoded")
        warning = "truncated JPEG (no end marker): decoded as is, file left unchanged"
    return (h, w), orientation, warning


def _jpeg_complete(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read() == b"\xff\xd9"


def list_images(sources: list[str | Path] | str | Path) -> list[Path]:
    """Expand split entries (image directories searched recursively, `.txt` lists of image paths, image files)
    into a sorted, de-duplicated list of image paths. Relative paths in a `.txt` resolve against its folder.

    Raises FileNotFoundError naming the entry that does not exist.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files += [q for q in p.rglob("*") if q.is_file() and is_image(q)]
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    files.append(q if q.is_absolute() else p.parent / q)
        elif p.is_file() and is_image(p):
            files.append(p)
        elif p.is_file():
            raise ValueError(f"{p}: not an image, an image folder or a .txt list of images")
        else:
            raise FileNotFoundError(f"{p} does not exist")
    unique = {os.path.normpath(str(f)): None for f in files if is_image(f)}
    return [Path(f) for f in sorted(unique)]  # string order, as the incumbent sorts


def label_path(image: str | Path) -> Path:
    """The label file of an image: the last `/images/` of its path replaced by `/labels/`, suffix `.txt`."""
    s = str(image)
    sep_images, sep_labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sep_images in s:
        head, tail = s.rsplit(sep_images, 1)
        s = head + sep_labels + tail
    return Path(s.rsplit(".", 1)[0] + ".txt")
