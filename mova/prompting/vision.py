"""First-frame facts from pixels (no model): size, aspect, light, colours, detail, faces; and those facts in words.

``image_facts(image)`` measures; ``describe_facts(facts)`` turns the measurements into the four description
fields. The measurements are deliberately plain (means, k-means clusters, edge counts) so that every sentence
the offline provider writes can be traced to a number in ``facts``.

Faces: OpenCV 5 wheels no longer ship the Haar cascades (``cv2.CascadeClassifier`` moved out of the main
package). A detector is used when one is available — a Haar cascade XML (``MOVA_FACE_CASCADE``, or the file in
``cv2.data.haarcascades`` on OpenCV 4) or a YuNet ONNX model (``MOVA_FACE_MODEL``) — and otherwise
``facts["faces"]`` is ``None`` ("not checked"), never a false "no faces".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

FaceBox = tuple[int, int, int, int]  # x, y, w, h in pixels
FaceDetector = Callable[[np.ndarray], Sequence[FaceBox]]  # uint8 RGB [H, W, 3] -> boxes

ANALYSIS_MAX_SIDE = 256  # images are downscaled to this longest side before measuring
KMEANS_K = 5
KMEANS_ITERS = 12
MIN_COLOUR_SHARE = 0.03  # colours covering less of the frame are not named

# (name, sRGB) — a small palette; names are matched by nearest neighbour in CIE Lab
COLOUR_NAMES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (0, 0, 0)),
    ("charcoal", (54, 54, 54)),
    ("grey", (128, 128, 128)),
    ("silver", (192, 192, 192)),
    ("white", (255, 255, 255)),
    ("cream", (250, 240, 210)),
    ("beige", (220, 200, 160)),
    ("tan", (200, 160, 110)),
    ("brown", (120, 70, 30)),
    ("dark brown", (70, 40, 20)),
    ("maroon", (128, 0, 0)),
    ("dark red", (160, 20, 30)),
    ("red", (255, 0, 0)),
    ("coral", (255, 120, 90)),
    ("orange", (255, 140, 0)),
    ("gold", (220, 170, 30)),
    ("yellow", (255, 235, 0)),
    ("olive", (120, 120, 20)),
    ("lime", (150, 230, 40)),
    ("green", (0, 160, 0)),
    ("dark green", (0, 80, 20)),
    ("teal", (0, 128, 128)),
    ("turquoise", (60, 210, 200)),
    ("cyan", (0, 230, 255)),
    ("sky blue", (120, 190, 240)),
    ("blue", (0, 0, 255)),
    ("royal blue", (50, 90, 220)),
    ("navy", (0, 0, 110)),
    ("purple", (120, 40, 160)),
    ("violet", (170, 110, 230)),
    ("magenta", (230, 0, 200)),
    ("pink", (255, 170, 200)),
    ("hot pink", (240, 60, 140)),
    ("skin tone", (225, 180, 150)),
)

_NAMED_ASPECTS = {
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "1:1": 1.0,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
    "21:9": 21 / 9,
    "2:1": 2.0,
    "1:2": 0.5,
}


# ---------------------------------------------------------------------------------------------------------
# 1. Input conversion
# ---------------------------------------------------------------------------------------------------------


def to_pil_rgb(image: Any) -> Image.Image:
    """A path, PIL image or uint8 numpy array ([H, W], [H, W, 3] RGB or [H, W, 4] RGBA) → RGB PIL image.

    Transparency is composited on white (the T2VA first frame is white).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(
                f"image: file {str(path)!r} does not exist; pass an existing image file, a PIL image or a uint8 array"
            )
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image: numpy dtype {image.dtype} is not allowed; pass uint8 RGB [H, W, 3]")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            image = Image.fromarray(np.ascontiguousarray(image))
        else:
            raise ValueError(
                f"image: numpy shape {tuple(image.shape)} is not allowed; pass [H, W], [H, W, 3] or [H, W, 4]"
            )
    elif not isinstance(image, Image.Image):
        raise ValueError(
            f"image: type {type(image).__name__} is not allowed; pass a path, a PIL image or a uint8 numpy array"
        )
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image: size {image.width}x{image.height} is empty")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------------------
# 2. Colour helpers
# ---------------------------------------------------------------------------------------------------------


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8/float in 0..255, [..., 3] → CIE Lab (D65), float64 [..., 3]."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_NAME_LAB = _srgb_to_lab(np.array([rgb for _, rgb in COLOUR_NAMES]))


def colour_name(rgb: Sequence[float]) -> str:
    """Nearest name in ``COLOUR_NAMES`` (Euclidean distance in Lab)."""
    lab = _srgb_to_lab(np.asarray(rgb, dtype=np.float64)[None])[0]
    return COLOUR_NAMES[int(np.argmin(((_NAME_LAB - lab) ** 2).sum(axis=1)))][0]


def _kmeans(pixels: np.ndarray, k: int, iters: int = KMEANS_ITERS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (k-means++ init, seeded). pixels [N, 3] float → (centres [k', 3], labels [N])."""
    unique = np.unique(pixels, axis=0)
    k = max(1, min(k, len(unique)))
    rng = np.random.default_rng(seed)
    centres = [pixels[rng.integers(len(pixels))]]
    for _ in range(1, k):
        d2 = np.min(((pixels[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        if d2.sum() == 0:
            break
        centres.append(pixels[rng.choice(len(pixels), p=d2 / d2.sum())])
    centres = np.array(centres)
    for _ in range(iters):
        labels = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        new = np.array(
            [pixels[labels == j].mean(0) if np.any(labels == j) else centres[j] for j in range(len(centres))]
        )
        if np.allclose(new, centres):
            break
        centres = new
    labels = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return centres, labels


def _position_word(x: float, y: float) -> str:
    """Normalised centre (0..1, 0..1) → "upper left", "centre", "lower right", ..."""
    col = "left" if x < 0.36 else "right" if x > 0.64 else ""
    row = "upper" if y < 0.36 else "lower" if y > 0.64 else ""
    if not col and not row:
        return "centre"
    return " ".join(w for w in (row, col) if w) if col else f"{row} centre"


def _nearest_aspect(ratio: float) -> str:
    name, value = min(_NAMED_ASPECTS.items(), key=lambda kv: abs(np.log(kv[1] / ratio)))
    return name if abs(np.log(value / ratio)) < 0.03 else f"{ratio:.2f}:1"


# ---------------------------------------------------------------------------------------------------------
# 3. Face detection (optional; see module docstring)
# ---------------------------------------------------------------------------------------------------------


def default_face_detector() -> FaceDetector | None:
    """The best face detector this OpenCV build and environment offer, or None."""
    import cv2

    cascade_path = os.environ.get("MOVA_FACE_CASCADE")
    if not cascade_path:
        data_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        candidate = Path(data_dir) / "haarcascade_frontalface_default.xml" if data_dir else None
        cascade_path = str(candidate) if candidate and candidate.is_file() else None
    if cascade_path and hasattr(cv2, "CascadeClassifier"):
        classifier = cv2.CascadeClassifier(cascade_path)
        if not classifier.empty():

            def haar(rgb: np.ndarray) -> list[FaceBox]:
                gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
                min_side = max(24, min(gray.shape) // 12)
                found = classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
                return [tuple(int(v) for v in box) for box in found]

            return haar
    model_path = os.environ.get("MOVA_FACE_MODEL")
    if model_path and Path(model_path).is_file() and hasattr(cv2, "FaceDetectorYN"):
        detector = cv2.FaceDetectorYN.create(model_path, "", (320, 320), 0.8)

        def yunet(rgb: np.ndarray) -> list[FaceBox]:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = detector.detect(bgr)
            return [] if faces is None else [tuple(int(v) for v in f[:4]) for f in faces]

        return yunet
    return None


# ---------------------------------------------------------------------------------------------------------
# 4. Measurements
# ---------------------------------------------------------------------------------------------------------


def image_facts(image: Any, face_detector: FaceDetector | None | bool = True) -> dict[str, Any]:
    """Measure a first frame. ``face_detector``: a callable, True (use ``default_face_detector``) or None/False.

    Returns a JSON-serialisable dict: width, height, aspect_ratio, aspect, orientation, brightness (0–1 mean
    luma), contrast (0–1 luma std), colourfulness (Hasler–Süsstrunk M), saturation (0–1), warmth (mean R−B,
    −1..1), colours (name, hex, share, position), background (name or None), edge_density (0–1), detail,
    light_bias (brighter side or None), sharpness_ratio (centre / border Laplacian variance), faces (list of
    {box, position, height_fraction} or None when no detector), face_detector.
    """
    import cv2

    pil = to_pil_rgb(image)
    width, height = pil.size
    scale = min(1.0, ANALYSIS_MAX_SIDE / max(width, height))
    small = (
        pil.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
        if scale < 1
        else pil
    )
    rgb = np.asarray(small, dtype=np.uint8)
    h, w = rgb.shape[:2]
    rgbf = rgb.astype(np.float64)
    luma = (0.299 * rgbf[..., 0] + 0.587 * rgbf[..., 1] + 0.114 * rgbf[..., 2]) / 255.0

    facts: dict[str, Any] = {"width": width, "height": height}
    # 4.1 geometry
    ratio = width / height
    facts["aspect_ratio"] = round(ratio, 4)
    facts["aspect"] = _nearest_aspect(ratio)
    facts["orientation"] = "landscape" if ratio > 1.05 else "portrait" if ratio < 0.95 else "square"
    # 4.2 light
    facts["brightness"] = round(float(luma.mean()), 4)
    facts["contrast"] = round(float(luma.std()), 4)
    left, right = luma[:, : w // 2].mean() if w > 1 else 0, luma[:, w - w // 2 :].mean() if w > 1 else 0
    top, bottom = luma[: h // 2].mean() if h > 1 else 0, luma[h - h // 2 :].mean() if h > 1 else 0
    bias = []
    if abs(left - right) > 0.12:
        bias.append("left" if left > right else "right")
    if abs(top - bottom) > 0.12:
        bias.append("top" if top > bottom else "bottom")
    facts["light_bias"] = " and ".join(bias) or None
    # 4.3 colour statistics (Hasler & Süsstrunk 2003 colourfulness)
    rg = rgbf[..., 0] - rgbf[..., 1]
    yb = 0.5 * (rgbf[..., 0] + rgbf[..., 1]) - rgbf[..., 2]
    facts["colourfulness"] = round(float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())), 2)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    facts["saturation"] = round(float(hsv[..., 1].mean() / 255.0), 4)
    facts["warmth"] = round(float((rgbf[..., 0] - rgbf[..., 2]).mean() / 255.0), 4)
    # 4.4 dominant colours: k-means on a ≤64-px copy, clusters merged by name
    tiny_scale = min(1.0, 64 / max(w, h))
    tiny = (
        np.asarray(
            small.resize((max(1, round(w * tiny_scale)), max(1, round(h * tiny_scale))), Image.Resampling.NEAREST)
        )
        if tiny_scale < 1
        else rgb
    )
    th, tw = tiny.shape[:2]
    pixels = tiny.reshape(-1, 3).astype(np.float64)
    centres, labels = _kmeans(pixels, KMEANS_K)
    # how far pixels sit from their cluster colour (0 for flat graphics, large for photos and noise)
    facts["colour_spread"] = round(float(np.sqrt(((pixels - centres[labels]) ** 2).sum(-1)).mean()), 2)
    ys, xs = np.divmod(np.arange(len(pixels)), tw)
    border = (ys == 0) | (ys == th - 1) | (xs == 0) | (xs == tw - 1)
    merged: dict[str, dict[str, Any]] = {}
    for j, centre in enumerate(centres):
        mask = labels == j
        if not mask.any():
            continue
        name = colour_name(centre)
        entry = merged.setdefault(name, {"mask": np.zeros_like(mask), "sum": np.zeros(3), "n": 0})
        entry["mask"] |= mask
        entry["sum"] += pixels[mask].sum(0)
        entry["n"] += int(mask.sum())
    colours = []
    for name, entry in merged.items():
        mask = entry["mask"]
        mean = entry["sum"] / entry["n"]
        colours.append(
            {
                "name": name,
                "hex": "#{:02x}{:02x}{:02x}".format(*(int(round(v)) for v in mean)),
                "share": round(entry["n"] / len(pixels), 4),
                "border_share": round(float(mask[border].mean()) if border.any() else 0.0, 4),
                "position": _position_word(float((xs[mask] + 0.5).mean() / tw), float((ys[mask] + 0.5).mean() / th)),
            }
        )
    colours.sort(key=lambda c: -c["share"])
    facts["colours"] = [c for c in colours if c["share"] >= MIN_COLOUR_SHARE] or colours[:1]
    # the background is the colour that owns most of the border, if it owns a clear majority of it
    border_owner = max(colours, key=lambda c: c["border_share"])
    facts["background"] = border_owner["name"] if border_owner["border_share"] >= 0.6 and len(colours) > 1 else None
    for c in colours:
        c.pop("border_share")
    # 4.5 detail and focus
    gray = (luma * 255).astype(np.uint8)
    edges = cv2.Canny(gray, 80, 160)
    facts["edge_density"] = round(float((edges > 0).mean()), 4)
    facts["detail"] = (
        "busy" if facts["edge_density"] > 0.15 else "detailed" if facts["edge_density"] > 0.05 else "minimal"
    )
    lap = cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F)
    cy0, cy1, cx0, cx1 = h // 4, h - h // 4, w // 4, w - w // 4
    centre_mask = np.zeros_like(lap, dtype=bool)
    centre_mask[cy0:cy1, cx0:cx1] = True
    centre_var, border_var = (
        float(lap[centre_mask].var()),
        float(lap[~centre_mask].var()) if (~centre_mask).any() else 0.0,
    )
    facts["sharpness_ratio"] = round((centre_var + 1.0) / (border_var + 1.0), 3)
    facts["centre_sharpness"] = round(centre_var, 2)
    # 4.6 faces
    detector = default_face_detector() if face_detector is True else (face_detector or None)
    facts["face_detector"] = getattr(detector, "__name__", type(detector).__name__) if detector else "none available"
    if detector is None:
        facts["faces"] = None
    else:
        full = np.asarray(pil, dtype=np.uint8)
        faces = []
        for x, y, fw, fh in detector(full):
            faces.append(
                {
                    "box": [int(x), int(y), int(fw), int(fh)],
                    "position": _position_word((x + fw / 2) / width, (y + fh / 2) / height),
                    "height_fraction": round(fh / height, 4),
                }
            )
        faces.sort(key=lambda f: -f["height_fraction"])
        facts["faces"] = faces
    return facts


# ---------------------------------------------------------------------------------------------------------
# 5. Facts in words
# ---------------------------------------------------------------------------------------------------------


def _join(words: Sequence[str]) -> str:
    words = [w for w in words if w]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def light_words(facts: dict[str, Any]) -> str:
    b, c = facts["brightness"], facts["contrast"]
    level = "dark, low-key" if b < 0.25 else "dim" if b < 0.4 else "bright, high-key" if b > 0.7 else "evenly exposed"
    spread = "high-contrast" if c > 0.28 else "low-contrast" if c < 0.1 else "moderate-contrast"
    return f"{level}, {spread}"


def palette_words(facts: dict[str, Any]) -> str:
    m = facts["colourfulness"]
    if m < 3:
        return "greyscale"
    vivid = "muted" if m < 20 else "moderately colourful" if m < 45 else "vivid" if m < 85 else "intensely saturated"
    warmth = facts["warmth"]
    temp = "warm" if warmth > 0.08 else "cool" if warmth < -0.08 else "neutral"
    return f"{vivid}, {temp}-toned"


# (largest face height / frame height above this, shot size), checked in order
SHOT_BY_FACE_HEIGHT = ((0.6, "extreme close-up"), (0.3, "close-up"), (0.17, "medium close-up"), (0.09, "medium shot"))


def shot_size_from_faces(faces: list[dict[str, Any]] | None) -> str | None:
    """Shot size from the largest face's height as a fraction of the frame height, or None without faces."""
    if not faces:
        return None
    fraction = faces[0]["height_fraction"]
    return next((shot for threshold, shot in SHOT_BY_FACE_HEIGHT if fraction > threshold), "wide shot")


def describe_facts(facts: dict[str, Any]) -> dict[str, str]:
    """The four description fields (style, cinematography, elements, on_screen_text) from ``image_facts``."""
    colours = facts["colours"]
    # style
    flat = facts["detail"] == "minimal" and len(colours) <= 3 and facts["colour_spread"] < 12
    texture = (
        "flat areas of solid colour with clean edges, a graphic look"
        if flat
        else {
            "minimal": "smooth, uncluttered surfaces",
            "detailed": "a moderate amount of fine detail",
            "busy": "dense fine detail and texture",
        }[facts["detail"]]
    )
    light, palette = _with_article(light_words(facts)).capitalize(), _with_article(palette_words(facts))
    style = f"{light} image with {palette} palette and {texture}."
    # cinematography
    orient = facts["orientation"]
    parts = [f"{_article(orient).capitalize()} {orient} {facts['aspect']} frame ({facts['width']}×{facts['height']})"]
    shot = shot_size_from_faces(facts.get("faces"))
    if shot:
        parts.append(f"framed as a {shot} of the main face in the {facts['faces'][0]['position']}")
    ratio = facts["sharpness_ratio"]
    if flat:
        pass  # a flat graphic has no depth of field to speak of
    elif ratio > 4 and facts["centre_sharpness"] > 50:
        parts.append("the centre is much sharper than the edges, suggesting shallow depth of field")
    elif ratio < 0.25:
        parts.append("the edges carry more detail than the centre")
    cine = "; ".join(parts) + "."
    # elements
    bits = []
    faces = facts.get("faces")
    if faces:
        where = _join(sorted({f["position"] for f in faces}))
        bits.append(f"{len(faces)} {'face' if len(faces) == 1 else 'faces'} visible ({where} of the frame)")
    background = facts.get("background")
    fg = [c for c in colours if c["name"] != background]
    if len(colours) == 1:
        bits.append(f"an almost uniform {colours[0]['name']} frame")
    elif background:
        if fg:
            shapes = _join([f"{_with_article(c['name'])} area in the {c['position']}" for c in fg[:3]])
            bits.append(f"{shapes} against {_with_article(background)} background")
        else:
            bits.append(f"a mostly {background} frame")
    else:
        shares = _join([f"{c['name']} ({round(100 * c['share'])}%)" for c in colours[:4]])
        bits.append(f"colours spread across the frame: {shares}")
    if facts.get("light_bias"):
        bits.append(f"the light is stronger toward the {facts['light_bias']} of the frame")
    elements = "; ".join(bits)
    elements = elements[0].upper() + elements[1:] + "."
    return {"style": style, "cinematography": cine, "elements": elements, "on_screen_text": ""}
