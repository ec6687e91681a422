"""Payload decoding and image transforms as production serving does them; bad payloads → PayloadError."""
from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PayloadError,
    PayloadLimits,
    classification_tensor,
    decode_image,
    letterbox,
    parse_qa,
)
from tests.models_samples import image_bytes, qa_bytes


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLOVER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "clover-cache"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_jpeg_and_png_decode_to_rgb(fmt):
    img = decode_image(image_bytes(320, 200, fmt))
    assert img.mode == "RGB" and img.size == (320, 200)


@pytest.mark.parametrize(
    "payload,match",
    [
        (b"", "empty"),
        (b"definitely not an image", "not a JPEG/PNG image"),
        (image_bytes(64, 64, "JPEG")[:200], "corrupt or truncated"),
        ("text", "must be bytes"),
    ],
)
def test_bad_images_are_payload_errors(payload, match):
    with pytest.raises(PayloadError, match=match) as err:
        decode_image(payload)
    assert err.value.status == 400 and isinstance(err.value, ValueError)


def test_other_image_formats_are_refused():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "GIF")
    with pytest.raises(PayloadError, match="not a JPEG/PNG image"):
        decode_image(buf.getvalue())


def test_size_limits_answer_413_before_decoding():
    payload = image_bytes(400, 300, "PNG")
    with pytest.raises(PayloadError, match="byte limit") as err:
        decode_image(payload, PayloadLimits(max_bytes=len(payload) - 1))
    assert err.value.status == 413
    with pytest.raises(PayloadError, match="pixel limit") as err:
        decode_image(payload, PayloadLimits(max_pixels=400 * 300 - 1))
    assert err.value.status == 413
    assert decode_image(payload, PayloadLimits(max_bytes=len(payload), max_pixels=400 * 300)).size == (400, 300)


def test_letterbox_keeps_ratio_and_pads_with_114():
    img = decode_image(image_bytes(1280, 720, "PNG"))
    tensor, meta = letterbox(img, 640)
    assert tensor.shape == (3, 640, 640) and tensor.dtype == torch.float32
    assert meta.orig_hw == (720, 1280) and meta.input_hw == (640, 640)
    pad = round(114 / 255, 4)
    # 1280x720 → 640x360, so 140 rows of padding above and below
    assert torch.allclose(tensor[:, :139, :], torch.tensor(pad), atol=1e-3)
    assert torch.allclose(tensor[:, -139:, :], torch.tensor(pad), atol=1e-3)
    assert not torch.allclose(tensor[:, 141:499, :], torch.tensor(pad), atol=1e-3)
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0


def test_classification_crop_and_imagenet_normalisation():
    img = Image.new("RGB", (500, 300), (124, 116, 104))  # ≈ ImageNet mean colour
    x = classification_tensor(img, crop=240, resize=256)
    assert x.shape == (3, 240, 240)
    expected = [(c / 255 - m) / s for c, m, s in zip((124, 116, 104), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=0.02)


def test_qa_json_is_parsed():
    req = parse_qa(qa_bytes("Who?", "Someone did."))
    assert (req.question, req.context) == ("Who?", "Someone did.")


@pytest.mark.parametrize(
    "payload,match",
    [
        (b"{not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"context": "c"}).encode(), "missing field 'question'"),
        (json.dumps({"question": "q"}).encode(), "missing field 'context'"),
        (json.dumps({"question": "   ", "context": "c"}).encode(), "'question' is empty"),
        (json.dumps({"question": 3, "context": "c"}).encode(), "must be a string"),
    ],
)
def test_bad_qa_payloads_are_payload_errors(payload, match):
    with pytest.raises(PayloadError, match=match):
        parse_qa(payload)


def test_qa_text_limit_answers_413():
    with pytest.raises(PayloadError, match="characters") as err:
        parse_qa(qa_bytes("q?", "x" * 101), PayloadLimits(max_text_chars=100))
    assert err.value.status == 413


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (300, 200), (10, 200, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phone cameras write
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue()).size == (200, 300)
