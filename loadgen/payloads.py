"""Request bodies: synthetic by default, or the user's images / SQuAD-style questions.

A service's `input` in configs/services.yaml says what it takes: `image` (raw JPEG/PNG bytes)
or `qa-json` (`{"question", "context"}`). Synthetic images have random shapes over noise, in a few
sizes, so pre-processing (decode, resize) costs what it would on real photos; a blank image would
compress to almost nothing and under-state upload and decode time.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loadgen.errors import LoadgenInputError

IMAGE_SIZES = ((320, 240), (640, 480), (1280, 720))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
SYNTHETIC_COUNT = 12


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    source: str  # file name or "synthetic-N", to tell the user which input a 4xx came from


def synthetic_images(count: int, seed: int | None) -> list[Payload]:
    """JPEGs of random rectangles/ellipses over noise, cycling through IMAGE_SIZES."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 10))):
            x0, x1 = sorted(rng.integers(0, w, 2).tolist())
            y0, y1 = sorted(rng.integers(0, h, 2).tolist())
            colour = tuple(rng.integers(0, 256, 3).tolist())
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1, y1), fill=colour)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        out.append(Payload(buf.getvalue(), "image/jpeg", f"synthetic-{i}"))
    return out


_SUBJECTS = ("river", "bridge", "library", "observatory", "railway", "cathedral", "harbour", "university")
_PLACES = ("Norwich", "Lyon", "Graz", "Porto", "Utrecht", "Bergen", "Cork", "Basel")
_FILLER = (
    "It is one of the best known landmarks of the region and draws many visitors every year.",
    "Local records describe several renovations, the most recent of which finished a decade ago.",
    "The surrounding district grew quickly during the industrial period.",
    "Guided tours are offered in several languages throughout the summer.",
)


def synthetic_questions(count: int, seed: int | None) -> list[Payload]:
    """SQuAD-style question+context pairs whose answer is a span of the context."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        subject, place = rng.choice(_SUBJECTS), rng.choice(_PLACES)
        year = rng.randint(1150, 1990)
        filler = " ".join(rng.sample(_FILLER, k=rng.randint(1, len(_FILLER))))
        context = f"The {subject} of {place} was completed in {year}. {filler}"
        question = f"When was the {subject} of {place} completed?"
        out.append(_qa_payload(question, context, f"synthetic-{i}"))
    return out


def _qa_payload(question: str, context: str, source: str) -> Payload:
    return Payload(json.dumps({"question": question, "context": context}).encode(), "application/json", source)


def load_image_dir(path: Path) -> list[Payload]:
    """Every JPEG/PNG directly inside `path`; a file with an image suffix that PIL cannot read is an error."""
    if not path.is_dir():
        raise LoadgenInputError(f"--payloads {path}: image services take a folder of JPEG/PNG files, and this is not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LoadgenInputError(
            f"--payloads {path}: no .jpg/.jpeg/.png files in this folder; add some images or leave out --payloads for synthetic ones"
        )
    out = []
    for f in files:
        body = f.read_bytes()
        try:
            with Image.open(io.BytesIO(body)) as img:
                fmt = img.format
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise LoadgenInputError(f"--payloads {f}: not a readable image ({exc}); remove or replace it") from None
        if fmt not in CONTENT_TYPES:
            raise LoadgenInputError(f"--payloads {f}: the file is {fmt}, not JPEG or PNG; convert it or remove it")
        out.append(Payload(body, CONTENT_TYPES[fmt], f.name))
    return out


class _Qa(BaseModel):
    model_config = ConfigDict(extra="ignore")
    question: str = Field(min_length=1)


class _Paragraph(BaseModel):
    model_config = ConfigDict(extra="ignore")
    context: str = Field(min_length=1)
    qas: list[_Qa]


class _Article(BaseModel):
    model_config = ConfigDict(extra="ignore")
    paragraphs: list[_Paragraph]


class _Squad(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: list[_Article]


def load_squad(path: Path) -> list[Payload]:
    """One payload per question of a SQuAD-style file (`{"data":[{"paragraphs":[{"context","qas":[{"question"}]}]}]}`)."""
    if not path.is_file():
        raise LoadgenInputError(f"--payloads {path}: albert takes a SQuAD-style JSON file, and this is not a file")
    try:
        squad = _Squad.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise LoadgenInputError(
            f"--payloads {path}: not SQuAD-style JSON at {where}: {first['msg']} "
            '(expected {"data":[{"paragraphs":[{"context":...,"qas":[{"question":...}]}]}]})'
        ) from None
    out = [
        _qa_payload(qa.question, para.context, f"{path.name}#{a}.{p}.{q}")
        for a, article in enumerate(squad.data)
        for p, para in enumerate(article.paragraphs)
        for q, qa in enumerate(para.qas)
    ]
    if not out:
        raise LoadgenInputError(f"--payloads {path}: the file holds no questions")
    return out


def load_payloads(service_input: str, path: str | Path | None, seed: int | None) -> list[Payload]:
    """The payload pool for a service's `input` kind: the user's (`path`) or synthetic ones."""
    if service_input == "image":
        return load_image_dir(Path(path)) if path else synthetic_images(SYNTHETIC_COUNT, seed)
    if service_input == "qa-json":
        return load_squad(Path(path)) if path else synthetic_questions(SYNTHETIC_COUNT, seed)
    raise LoadgenInputError(f"no payloads for service input kind {service_input!r}; known: image, qa-json")
