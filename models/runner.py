"""One model variant ready to serve: payload → preprocess → batched forward → postprocess → JSON.

The serving layer keeps one `ModelRunner` per replica and wraps `infer_batch` in Ray Serve's
`@serve.batch` (max batch size and wait timeout from the plan); `infer_batch` runs one real
batched forward pass. The profiler times `forward` on `synthetic_inputs`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from models import postprocess as post
from models import preprocess as pre
from models.build import BuiltModel, build_model
from models.registry import ALBERT_MAX_SEQ_LEN, EFFNET_RESOLUTION, VariantSpec, get_spec
from models.tokenizer import QAEncoding, QATokenizer

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def available_cpus() -> int:
    """CPUs this process may run on (affinity/cgroup-aware, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads explicitly.

    Ray sets OMP_NUM_THREADS to the replica's `num_cpus` (often 1), which silently halves CPU
    throughput or worse; the replica's real budget is the CPUs it is allowed to run on.
    """
    n = threads or available_cpus()
    torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class ImageItem:
    tensor: torch.Tensor
    meta: pre.LetterboxMeta | None = None


@dataclass(frozen=True)
class QAItem:
    encoding: QAEncoding
    context: str


class _Task(Protocol):
    """What differs between families; ModelRunner supplies the common flow."""

    def preprocess(self, payload: bytes) -> Any: ...
    def collate(self, items: list, device: torch.device, dtype: torch.dtype) -> Any: ...
    def forward(self, module: torch.nn.Module, inputs: Any) -> Any: ...
    def postprocess(self, raw: Any, items: list) -> list[dict]: ...
    def synthetic(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any: ...


def _stack_images(items: list[ImageItem], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.stack([it.tensor for it in items]).to(device=device, dtype=dtype, non_blocking=True)


class _YoloTask:
    def __init__(self, spec: VariantSpec, built: BuiltModel, limits: pre.PayloadLimits):
        self.size, self.names, self.limits = spec.image_size, built.class_names, limits

    def preprocess(self, payload: bytes) -> ImageItem:
        tensor, meta = pre.letterbox(pre.decode_image(payload, self.limits), self.size)
        return ImageItem(tensor, meta)

    collate = staticmethod(_stack_images)

    def forward(self, module: torch.nn.Module, inputs: torch.Tensor) -> Any:
        return module(inputs)

    def postprocess(self, raw: Any, items: list[ImageItem]) -> list[dict]:
        return post.yolo_detections(raw, [it.meta for it in items], self.names)

    def synthetic(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.rand(batch, 3, self.size, self.size, device=device, dtype=dtype)


class _EffnetTask:
    def __init__(self, spec: VariantSpec, built: BuiltModel, limits: pre.PayloadLimits):
        self.crop, self.resize = EFFNET_RESOLUTION[spec.name]
        self.names, self.limits = built.class_names, limits

    def preprocess(self, payload: bytes) -> ImageItem:
        return ImageItem(pre.classification_tensor(pre.decode_image(payload, self.limits), self.crop, self.resize))

    collate = staticmethod(_stack_images)

    def forward(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return module(inputs)

    def postprocess(self, raw: torch.Tensor, items: list[ImageItem]) -> list[dict]:
        return post.top_classes(raw, self.names)

    def synthetic(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(batch, 3, self.crop, self.crop, device=device, dtype=dtype)


class _AlbertTask:
    def __init__(self, spec: VariantSpec, built: BuiltModel, limits: pre.PayloadLimits, weights_dir: Path | None):
        tok_dir = Path(weights_dir) / spec.weights_name if weights_dir is not None else None
        self.tokenizer = QATokenizer.load(ALBERT_MAX_SEQ_LEN, tok_dir)
        self.vocab = built.module.config.vocab_size
        self.limits = limits

    def preprocess(self, payload: bytes) -> QAItem:
        request = pre.parse_qa(payload, self.limits)
        return QAItem(self.tokenizer.encode(request.question, request.context), request.context)

    def collate(self, items: list[QAItem], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        def col(field: str) -> torch.Tensor:
            return torch.tensor([getattr(it.encoding, field) for it in items], dtype=torch.long, device=device)

        return {k: col(k) for k in ("input_ids", "token_type_ids", "attention_mask")}

    def forward(self, module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = module(**inputs)
        return out.start_logits, out.end_logits

    def postprocess(self, raw: tuple[torch.Tensor, torch.Tensor], items: list[QAItem]) -> list[dict]:
        return post.qa_answers(raw[0], raw[1], [it.encoding for it in items], [it.context for it in items])

    def synthetic(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        shape = (batch, ALBERT_MAX_SEQ_LEN)
        return {
            "input_ids": torch.randint(5, self.vocab, shape, device=device),
            "token_type_ids": torch.zeros(shape, dtype=torch.long, device=device),
            "attention_mask": torch.ones(shape, dtype=torch.long, device=device),
        }


class ModelRunner:
    """A built variant on one device; thread-safe for concurrent `preprocess` calls."""

    def __init__(
        self,
        service: str,
        variant: str,
        device: str = "cpu",
        weights_dir: str | Path | None = None,
        threads: int | None = None,
        dtype: str | None = None,
        limits: pre.PayloadLimits = pre.PayloadLimits(),
    ):
        self.spec = get_spec(service, variant)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
        self.dtype_name = dtype or ("fp16" if self.device.type == "cuda" else "fp32")
        if self.dtype_name not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype_name!r}")
        self.dtype = DTYPES[self.dtype_name]
        self.threads = configure_cpu_threads(threads) if self.device.type == "cpu" else None
        self.built = build_model(self.spec, weights_dir)
        self.module = self.built.module.to(device=self.device, dtype=self.dtype)
        task_cls = {"yolo": _YoloTask, "effnet": _EffnetTask}.get(self.spec.family)
        self._task: _Task = (
            task_cls(self.spec, self.built, limits) if task_cls
            else _AlbertTask(self.spec, self.built, limits, Path(weights_dir) if weights_dir else None)
        )

    @property
    def info(self) -> dict:
        return {
            "service": self.spec.service,
            "variant": self.spec.name,
            "profile_key": self.spec.profile_key,
            "params": self.built.params,
            "build_s": round(self.built.build_s, 3),
            "device": str(self.device),
            "dtype": self.dtype_name,
            "threads": self.threads,
            "weights": self.built.weights,
        }

    def preprocess(self, payload: bytes) -> Any:
        """Decode and transform one request (CPU); raises PayloadError for unusable payloads."""
        return self._task.preprocess(payload)

    def forward(self, inputs: Any) -> Any:
        """The network alone on collated or synthetic inputs (what the profiler times)."""
        with torch.inference_mode():
            return self._task.forward(self.module, inputs)

    def postprocess(self, raw: Any, items: list) -> list[dict]:
        with torch.inference_mode():
            return self._task.postprocess(raw, items)

    def infer_batch(self, items: list) -> list[dict]:
        """One batched forward pass over preprocessed items; one JSON-ready result per item."""
        if not items:
            return []
        inputs = self._task.collate(items, self.device, self.dtype)
        return self.postprocess(self.forward(inputs), items)

    def predict(self, payload: bytes) -> dict:
        return self.infer_batch([self.preprocess(payload)])[0]

    def synthetic_inputs(self, batch: int) -> Any:
        """Random inputs of the production shape, already on the device."""
        return self._task.synthetic(batch, self.device, self.dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def warmup(self, batch_sizes: tuple[int, ...] = (1,), iters: int = 2) -> None:
        """Run a few forward passes so first requests don't pay for lazy init / autotuning."""
        for batch in batch_sizes:
            inputs = self.synthetic_inputs(batch)
            for _ in range(iters):
                self.forward(inputs)
        self.synchronize()
