"""Output decoding: NMS + box mapping to the original image, top-5, best QA span."""
from __future__ import annotations

import pytest
import torch

from models.postprocess import qa_answers, top_classes, yolo_detections
from models.preprocess import LetterboxMeta
from models.tokenizer import QAEncoding

NAMES = [f"class{i}" for i in range(80)]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLOVER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "clover-cache"))


def _yolo_raw(boxes: list[tuple[float, float, float, float, int, float]], n: int = 100) -> torch.Tensor:
    """Raw head output (1, 4+80, n): xywh in letterboxed pixels + per-class scores."""
    raw = torch.zeros(1, 84, n)
    raw[0, :4] = torch.tensor([320.0, 320.0, 10.0, 10.0])[:, None]
    for i, (cx, cy, w, h, cls, score) in enumerate(boxes):
        raw[0, :4, i] = torch.tensor([cx, cy, w, h])
        raw[0, 4 + cls, i] = score
    return raw


def test_yolo_boxes_are_nms_filtered_and_mapped_to_original_pixels():
    # 1280x720 letterboxed into 640x640: scale 0.5, 140 px of padding on top
    meta = LetterboxMeta(orig_hw=(720, 1280), input_hw=(640, 640))
    raw = _yolo_raw([
        (320, 320, 100, 50, 2, 0.9),    # kept
        (322, 321, 100, 50, 2, 0.6),    # overlaps the first, same class: suppressed
        (322, 321, 100, 50, 7, 0.5),    # overlaps but another class: kept
        (100, 200, 40, 40, 0, 0.1),     # below the confidence threshold
    ])
    (result,) = yolo_detections(raw, [meta], NAMES)
    dets = result["detections"]
    assert [d["class_id"] for d in dets] == [2, 7]
    assert dets[0]["class_name"] == "class2" and dets[0]["score"] == pytest.approx(0.9)
    assert dets[0]["box"] == pytest.approx([540.0, 310.0, 740.0, 410.0], abs=0.2)


def test_yolo_boxes_are_clipped_to_the_image():
    meta = LetterboxMeta(orig_hw=(720, 1280), input_hw=(640, 640))
    (result,) = yolo_detections(_yolo_raw([(630, 160, 60, 60, 1, 0.8)]), [meta], NAMES)
    x1, y1, x2, y2 = result["detections"][0]["box"]
    assert x2 == pytest.approx(1280) and y1 == pytest.approx(0)


def test_top5_is_sorted_softmax():
    logits = torch.tensor([[0.0, 5.0, 1.0, 3.0, 2.0, 4.0, -1.0]])
    (result,) = top_classes(logits, [f"c{i}" for i in range(7)])
    assert [t["class_id"] for t in result["top"]] == [1, 5, 3, 4, 2]
    assert result["top"][0]["class_name"] == "c1"
    assert result["top"][0]["score"] == pytest.approx(float(logits.softmax(-1)[0, 1]), abs=1e-5)


def _encoding() -> tuple[QAEncoding, str]:
    context = "the bridge opened in 1788 and closed in 1931"
    words = context.split()
    offsets: list = [None, None, None]  # [CLS] question [SEP]
    pos = 0
    for w in words:
        start = context.index(w, pos)
        offsets.append((start, start + len(w)))
        pos = start + len(w)
    offsets += [None, None, None]  # [SEP] + padding
    n = len(offsets)
    return QAEncoding([0] * n, [0] * n, [1] * n, offsets, truncated=False), context


def test_best_span_maps_back_to_context_characters():
    enc, context = _encoding()
    n = len(enc.context_offsets)
    start = torch.full((1, n), -5.0)
    end = torch.full((1, n), -5.0)
    start[0, 7], end[0, 7] = 6.0, 6.0  # "1788"
    start[0, 0], end[0, 0] = 9.0, 9.0  # [CLS] is not part of the context: never an answer
    (ans,) = qa_answers(start, end, [enc], [context])
    assert ans["answer"] == "1788"
    assert context[ans["start"]:ans["end"]] == "1788"
    assert 0 < ans["score"] <= 1


def test_span_respects_end_after_start_and_max_length():
    enc, context = _encoding()
    n = len(enc.context_offsets)
    start = torch.zeros(1, n)
    end = torch.zeros(1, n)
    start[0, 8], end[0, 4] = 8.0, 8.0  # best end lies before best start: invalid pair
    end[0, 10] = 4.0
    (ans,) = qa_answers(start, end, [enc], [context])
    assert ans["answer"] == "and closed in"  # start token 8 .. end token 10
    (short,) = qa_answers(start, end, [enc], [context], max_answer_tokens=2)
    assert len(short["answer"].split()) <= 2
