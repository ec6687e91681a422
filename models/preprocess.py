"""Request payload → model input, as production serving does it; bad payloads raise PayloadError.

Images (JPEG/PNG bytes) are checked against size limits *before* pixels are decoded, so a
decompression bomb costs nothing. YOLO gets ultralytics' letterbox (keep ratio, pad 114, /255);
EfficientNet gets resize + center-crop at its native resolution + ImageNet normalisation;
ALBERT gets `{"question", "context"}` JSON tokenised as `[CLS] q [SEP] c [SEP]`.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin

from models.errors import PayloadError

if TYPE_CHECKING:  # torch is imported where tensors are made: a simulated replica only decodes
    import torch

__all__ = [
    "PayloadError", "PayloadLimits", "decode_image", "letterbox", "classification_tensor",
    "LetterboxMeta", "QARequest", "parse_qa", "IMAGENET_MEAN", "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_FORMATS = ("JPEG", "PNG")
_IMAGE_MAGIC: dict[bytes, type[ImageFile.ImageFile]] = {
    b"\xff\xd8\xff": JpegImagePlugin.JpegImageFile,
    b"\x89PNG\r\n\x1a\n": PngImagePlugin.PngImageFile,
}


@dataclass(frozen=True)
class PayloadLimits:
    """Largest accepted request: bytes on the wire, decoded pixels, QA text characters."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_text_chars: int = 100_000


def _check_size(payload: bytes, limits: PayloadLimits) -> None:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) == 0:
        raise PayloadError("empty payload")
    if len(payload) > limits.max_bytes:
        raise PayloadError(
            f"payload is {len(payload)} bytes, over the {limits.max_bytes}-byte limit", status=413
        )


def _image_class(payload: bytes) -> type[ImageFile.ImageFile]:
    for magic, cls in _IMAGE_MAGIC.items():
        if bytes(payload[: len(magic)]) == magic:
            return cls
    raise PayloadError(f"payload is not a {'/'.join(IMAGE_FORMATS)} image (unrecognised leading bytes)")


def decode_image(payload: bytes, limits: PayloadLimits = PayloadLimits()) -> Image.Image:
    """JPEG/PNG bytes → RGB image, refusing non-images and oversized ones with a clear message.

    The format's decoder is chosen from the magic bytes instead of `Image.open`, because
    ultralytics monkey-patches `Image.open` to pip-install a HEIF plugin whenever Pillow cannot
    identify a file — a request handler must never do that.
    """
    _check_size(payload, limits)
    cls = _image_class(payload)
    try:
        img = cls(io.BytesIO(bytes(payload)))
        w, h = img.size  # from the header: nothing decoded yet
        if w * h > limits.max_pixels:
            raise PayloadError(
                f"image is {w}x{h} = {w * h} pixels, over the {limits.max_pixels}-pixel limit", status=413
            )
        img.load()
        img = ImageOps.exif_transpose(img)  # camera JPEGs: pixels as the viewer shows them
        rgb = img.convert("RGB")
    except PayloadError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise PayloadError(f"{cls.format} image data is corrupt or truncated: {exc}") from None
    return rgb


@dataclass(frozen=True)
class LetterboxMeta:
    """Original image size, needed to map boxes back from the letterboxed input."""

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]


def letterbox(img: Image.Image, size: int) -> tuple[torch.Tensor, LetterboxMeta]:
    """Ultralytics' letterbox: scale to fit `size`, keep aspect ratio, pad with 114, scale to [0,1]."""
    import torch

    from models.build import force_offline

    force_offline()  # before ultralytics is first imported (it reads its settings then)
    from ultralytics.data.augment import LetterBox

    arr = np.asarray(img)  # HWC RGB uint8; ultralytics models take RGB
    boxed = LetterBox(new_shape=(size, size), auto=False, scaleup=True)(image=arr)
    tensor = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))).float().div_(255.0)
    return tensor, LetterboxMeta(orig_hw=arr.shape[:2], input_hw=(size, size))


def classification_tensor(img: Image.Image, crop: int, resize: int) -> torch.Tensor:
    """Resize the short side to `resize` (bicubic), center-crop `crop`, ImageNet-normalise."""
    import torch
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.PILToTensor(),
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(crop),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return transform(img)


@dataclass(frozen=True)
class QARequest:
    question: str
    context: str


def parse_qa(payload: bytes, limits: PayloadLimits = PayloadLimits()) -> QARequest:
    """`{"question": str, "context": str}` JSON → QARequest; both must be non-empty strings."""
    _check_size(payload, limits)
    try:
        doc = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f'payload is not UTF-8 JSON ({exc}); send {{"question": ..., "context": ...}}') from None
    if not isinstance(doc, dict):
        raise PayloadError(f'payload must be a JSON object {{"question", "context"}}, got {type(doc).__name__}')
    fields = {}
    for key in ("question", "context"):
        value = doc.get(key)
        if value is None:
            raise PayloadError(f"missing field {key!r}; send {{\"question\": ..., \"context\": ...}}")
        if not isinstance(value, str):
            raise PayloadError(f"field {key!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise PayloadError(f"field {key!r} is empty")
        if len(value) > limits.max_text_chars:
            raise PayloadError(
                f"field {key!r} has {len(value)} characters, over the {limits.max_text_chars} limit", status=413
            )
        fields[key] = value
    return QARequest(**fields)

