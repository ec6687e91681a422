"""Real request payloads for the model tests: PIL-drawn JPEG/PNG images and SQuAD-style JSON."""
from __future__ import annotations

import io
import json

from PIL import Image, ImageDraw

QA_CONTEXT = (
    "The first stone bridge over the river opened in 1788. It was replaced by a steel bridge "
    "in 1931 and by the current concrete bridge in 1999."
)
QA_QUESTION = "When did the first stone bridge open?"


def image_bytes(width: int = 800, height: int = 500, fmt: str = "JPEG") -> bytes:
    """A scene with a few filled shapes (so resampling and JPEG coding have real content)."""
    img = Image.new("RGB", (width, height), (90, 140, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle([width // 8, height // 3, width // 2, height - 20], fill=(200, 40, 40))
    draw.ellipse([width // 2, height // 8, width - 30, height // 2], fill=(240, 220, 60))
    draw.line([0, height - 1, width, 0], fill=(20, 20, 20), width=5)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def qa_bytes(question: str = QA_QUESTION, context: str = QA_CONTEXT) -> bytes:
    return json.dumps({"question": question, "context": context}).encode()
