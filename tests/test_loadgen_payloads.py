"""Synthetic and user-supplied payloads, and the errors for unusable ones."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from loadgen.errors import LoadgenInputError
from loadgen.payloads import (
    IMAGE_SIZES,
    load_payloads,
    synthetic_images,
    synthetic_questions,
)


def _image_bytes(fmt: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_synthetic_images_are_varied_jpegs():
    images = synthetic_images(6, seed=1)
    sizes = set()
    for p in images:
        assert p.content_type == "image/jpeg"
        with Image.open(io.BytesIO(p.body)) as img:
            assert img.format == "JPEG"
            sizes.add(img.size)
    assert sizes == set(IMAGE_SIZES)
    assert len({p.body for p in images}) == 6  # random content, not one image repeated
    # noise does not compress away: a 640x480 image is tens of kB, like a photo
    assert len(images[1].body) > 20_000
    assert [p.body for p in synthetic_images(3, seed=1)] == [p.body for p in images[:3]]


def test_synthetic_questions_answerable_from_context():
    for p in synthetic_questions(5, seed=2):
        doc = json.loads(p.body)
        assert p.content_type == "application/json" and set(doc) == {"question", "context"}
        subject_place = doc["question"].removeprefix("When was the ").removesuffix(" completed?")
        assert subject_place in doc["context"]


def test_image_folder_jpeg_and_png(tmp_path):
    (tmp_path / "a.JPG").write_bytes(_image_bytes("JPEG"))
    (tmp_path / "b.png").write_bytes(_image_bytes("PNG"))
    (tmp_path / "notes.txt").write_text("ignored")
    payloads = load_payloads("image", tmp_path, seed=None)
    assert [(p.source, p.content_type) for p in payloads] == [("a.JPG", "image/jpeg"), ("b.png", "image/png")]


def test_empty_image_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(LoadgenInputError, match=r"no \.jpg/\.jpeg/\.png files in this folder"):
        load_payloads("image", tmp_path, seed=None)


def test_corrupt_image(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(LoadgenInputError, match=r"broken\.jpg: not a readable image"):
        load_payloads("image", tmp_path, seed=None)


def test_image_in_other_format(tmp_path):
    (tmp_path / "fake.png").write_bytes(_image_bytes("GIF"))
    with pytest.raises(LoadgenInputError, match=r"fake\.png: the file is GIF, not JPEG or PNG"):
        load_payloads("image", tmp_path, seed=None)


def test_image_service_given_a_file(tmp_path):
    f = tmp_path / "squad.json"
    f.write_text("{}")
    with pytest.raises(LoadgenInputError, match="image services take a folder"):
        load_payloads("image", f, seed=None)


def test_squad_file(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "Ray was created at Berkeley.", "qas": [{"question": "Where?", "id": "1", "answers": []},
                                                            {"question": "What?", "id": "2"}]},
        {"context": "MIG splits a GPU.", "qas": [{"question": "What splits a GPU?"}]}]}]}
    f = tmp_path / "dev.json"
    f.write_text(json.dumps(squad))
    payloads = load_payloads("qa-json", f, seed=None)
    assert [json.loads(p.body) for p in payloads] == [
        {"question": "Where?", "context": "Ray was created at Berkeley."},
        {"question": "What?", "context": "Ray was created at Berkeley."},
        {"question": "What splits a GPU?", "context": "MIG splits a GPU."},
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not SQuAD-style JSON at (top level)"),
        ('{"data": [{"paragraphs": [{"qas": []}]}]}', "not SQuAD-style JSON at data.0.paragraphs.0.context"),
        ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": ""}]}]}]}', "data.0.paragraphs.0.qas.0.question"),
        ('{"data": []}', "the file holds no questions"),
    ],
)
def test_bad_squad_file(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(LoadgenInputError) as err:
        load_payloads("qa-json", f, seed=None)
    assert message in str(err.value) and "bad.json" in str(err.value)


def test_albert_given_a_folder(tmp_path):
    with pytest.raises(LoadgenInputError, match="albert takes a SQuAD-style JSON file"):
        load_payloads("qa-json", tmp_path, seed=None)
