"""Raw network outputs → JSON-serialisable answers, as production serving returns them.

YOLO: confidence filter + class-aware NMS (ultralytics), boxes mapped back to the original
image's pixel coordinates. EfficientNet: softmax top-5. ALBERT: the best answer span
(end ≥ start, at most `max_answer_tokens` long, inside the context) mapped back to the
context's characters.
"""
from __future__ import annotations

import torch

from models.build import force_offline
from models.preprocess import LetterboxMeta
from models.tokenizer import QAEncoding


def yolo_detections(
    raw: torch.Tensor | tuple,
    metas: list[LetterboxMeta],
    names: list[str],
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
) -> list[dict]:
    """Per image: `{"detections": [{"box": [x1, y1, x2, y2], "score", "class_id", "class_name"}]}`."""
    force_offline()  # before ultralytics is first imported (it reads its settings then)
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    pred = raw[0] if isinstance(raw, (tuple, list)) else raw
    kept = non_max_suppression(pred.float(), conf_thres=conf, iou_thres=iou, max_det=max_det, nc=len(names))
    results = []
    for det, meta in zip(kept, metas):
        boxes = ops.scale_boxes(meta.input_hw, det[:, :4].clone(), meta.orig_hw)
        results.append({
            "detections": [
                {
                    "box": [round(v, 1) for v in box],
                    "score": round(score, 4),
                    "class_id": int(cls),
                    "class_name": names[int(cls)],
                }
                for box, score, cls in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].tolist())
            ]
        })
    return results


def top_classes(logits: torch.Tensor, names: list[str], k: int = 5) -> list[dict]:
    """Per image: `{"top": [{"class_id", "class_name", "score"}]}`, softmax scores, best first."""
    probs = logits.float().softmax(dim=-1)
    scores, ids = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [
        {"top": [
            {"class_id": int(i), "class_name": names[int(i)], "score": round(float(s), 5)}
            for s, i in zip(row_s.tolist(), row_i.tolist())
        ]}
        for row_s, row_i in zip(scores, ids)
    ]


def qa_answers(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    encodings: list[QAEncoding],
    contexts: list[str],
    max_answer_tokens: int = 30,
) -> list[dict]:
    """Per pair: `{"answer", "score", "start", "end", "truncated"}` (character offsets in the context).

    Score is p(start)·p(end) with both softmaxes restricted to context tokens, the convention of
    the Hugging Face QA pipeline; the span maximising it is searched over all (start, end) pairs
    at once with a banded upper-triangular mask.
    """
    seq = start_logits.shape[-1]
    band = torch.ones(seq, seq, dtype=torch.bool).triu().tril(max_answer_tokens - 1)
    results = []
    for s_log, e_log, enc, context in zip(start_logits.float().cpu(), end_logits.float().cpu(), encodings, contexts):
        in_context = torch.tensor([o is not None for o in enc.context_offsets])
        p_start = s_log.masked_fill(~in_context, float("-inf")).softmax(-1)
        p_end = e_log.masked_fill(~in_context, float("-inf")).softmax(-1)
        joint = (p_start[:, None] * p_end[None, :]).masked_fill(~band, 0.0)
        best = int(joint.argmax())
        i, j = divmod(best, seq)
        start, end = enc.context_offsets[i][0], enc.context_offsets[j][1]
        results.append({
            "answer": context[start:end],
            "score": round(float(joint.view(-1)[best]), 6),
            "start": start,
            "end": end,
            "truncated": enc.truncated,
        })
    return results
