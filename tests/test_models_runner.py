"""A real forward pass with production pre/post-processing for the smallest variant of each family."""
from __future__ import annotations

import json

import pytest
import torch

from models.preprocess import PayloadError
from models.runner import ModelRunner, available_cpus
from tests.models_samples import QA_CONTEXT, image_bytes, qa_bytes


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOVER_CACHE_DIR", str(tmp_path_factory.mktemp("clover-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def yolo():
    return ModelRunner("yolo", "yolo11n")


@pytest.fixture(scope="module")
def effnet():
    return ModelRunner("efficientnet", "b0")


@pytest.fixture(scope="module")
def albert():
    return ModelRunner("albert", "base")


def test_cpu_threads_are_set_to_the_available_cpus(effnet):
    assert effnet.threads == available_cpus() == torch.get_num_threads()
    assert effnet.info["dtype"] == "fp32" and effnet.info["params"] == 5288548


def test_yolo11n_detects_on_a_real_jpeg(yolo):
    item = yolo.preprocess(image_bytes(1280, 720, "JPEG"))
    assert item.tensor.shape == (3, 640, 640)
    raw = yolo.forward(yolo._task.collate([item], yolo.device, yolo.dtype))
    pred = raw[0] if isinstance(raw, (tuple, list)) else raw
    assert pred.shape[:2] == (1, 84)  # xywh + 80 COCO classes per anchor
    result = yolo.predict(image_bytes(1280, 720, "JPEG"))
    json.dumps(result)
    assert isinstance(result["detections"], list)  # random weights: scores sit below the threshold
    for det in result["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 1280 and 0 <= y1 <= y2 <= 720


def test_effnet_b0_classifies_png_and_jpeg_in_one_batch(effnet):
    payloads = [image_bytes(640, 480, "PNG"), image_bytes(300, 500, "JPEG"), image_bytes(640, 480, "PNG")]
    items = [effnet.preprocess(p) for p in payloads]
    assert items[0].tensor.shape == (3, 224, 224)
    results = effnet.infer_batch(items)
    json.dumps(results)
    assert len(results) == 3
    for res in results:
        assert len(res["top"]) == 5
        scores = [t["score"] for t in res["top"]]
        assert scores == sorted(scores, reverse=True)
        assert isinstance(res["top"][0]["class_name"], str)
    assert [t["class_id"] for t in results[0]["top"]] == [t["class_id"] for t in results[2]["top"]]
    single = effnet.predict(payloads[1])
    assert [t["class_id"] for t in single["top"]] == [t["class_id"] for t in results[1]["top"]]


def test_albert_base_answers_with_a_span_of_the_context(albert):
    results = albert.infer_batch([albert.preprocess(qa_bytes()), albert.preprocess(qa_bytes("Who?", "Nobody knows."))])
    json.dumps(results)
    first, second = results
    assert first["answer"] and first["answer"] == QA_CONTEXT[first["start"]:first["end"]]
    assert second["answer"] == "Nobody knows."[second["start"]:second["end"]]
    assert not first["truncated"]


def test_invalid_payloads_raise_and_the_runner_stays_usable(effnet, albert):
    with pytest.raises(PayloadError):
        effnet.preprocess(b"GIF89a not really")
    with pytest.raises(PayloadError, match="empty"):
        albert.preprocess(qa_bytes(question=""))
    assert len(effnet.predict(image_bytes(200, 200, "PNG"))["top"]) == 5
    assert "answer" in albert.predict(qa_bytes())


def test_empty_batch_and_synthetic_inputs(effnet, albert):
    assert effnet.infer_batch([]) == []
    assert effnet.synthetic_inputs(2).shape == (2, 3, 224, 224)
    ids = albert.synthetic_inputs(2)["input_ids"]
    assert ids.shape == (2, 384)
    start, end = albert.forward(albert.synthetic_inputs(2))
    assert start.shape == end.shape == (2, 384)


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ModelRunner("efficientnet", "b0", device="cuda")


def test_albert_from_a_local_hf_directory_uses_its_weights_and_tokenizer(tmp_path, albert):
    from models.tokenizer import fallback_tokenizer

    hf_dir = tmp_path / "albert-base-v2"
    albert.built.module.save_pretrained(hf_dir)
    fallback_tokenizer().save(str(hf_dir / "tokenizer.json"))  # stands in for the real tokenizer.json
    local = ModelRunner("albert", "base", weights_dir=tmp_path)
    assert local.info["weights"] == str(hf_dir)
    assert local._task.tokenizer.source == str(hf_dir)
    body = qa_bytes()
    assert local.predict(body) == albert.predict(body)  # same weights, same tokenizer, same answer
