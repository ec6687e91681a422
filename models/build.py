"""Build one variant's network, fully offline, from local weights or with random initialisation.

Nothing here may reach the network: ultralytics and Hugging Face are forced offline before
they are imported, and architectures come from configs bundled with the libraries
(`yolo11n.yaml`, torchvision builders, an `AlbertConfig`). Without `weights_dir` the weights
are random: latency, throughput and energy are the same as with trained weights, outputs are
not — one loud warning per process says so.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models.registry import (
    ALBERT_EMBEDDING,
    ALBERT_MAX_SEQ_LEN,
    ALBERT_SIZES,
    ALBERT_VOCAB,
    VariantSpec,
)

log = logging.getLogger(__name__)

_warned = threading.Event()


def cache_dir() -> Path:
    """Writable per-user cache (`CLOVER_CACHE_DIR`, else ~/.cache/clover, else a temp dir)."""
    configured = os.environ.get("CLOVER_CACHE_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [Path.home() / ".cache" / "clover", Path(tempfile.gettempdir()) / "clover-cache"]
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise OSError(f"no writable cache directory among {[str(p) for p in candidates]}; set CLOVER_CACHE_DIR")


def force_offline() -> None:
    """Make ultralytics and Hugging Face libraries never try to download anything.

    Must run before they are imported: ultralytics reads its settings directory at import.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def warn_random_weights() -> None:
    """Say once per process, loudly, that outputs of randomly initialised models mean nothing."""
    if _warned.is_set():
        return
    _warned.set()
    log.warning(
        "!!! RANDOM WEIGHTS: no --weights-dir given, models are randomly initialised. Latency, "
        "throughput and energy are real; predictions are MEANINGLESS, and the accuracy Clover "
        "uses is the published figure from configs/services.yaml. See docs/models.md for the "
        "weight files to supply for real outputs. !!!"
    )


@dataclass
class BuiltModel:
    """A network ready for inference (eval mode, fused where applicable, on CPU, fp32)."""

    spec: VariantSpec
    module: torch.nn.Module
    class_names: list[str] | None  # detection / classification labels; None for QA
    params: int
    build_s: float
    weights: str  # path of the weights used, or "random"


def build_model(spec: VariantSpec, weights_dir: str | Path | None = None) -> BuiltModel:
    """Build `spec`'s network; with `weights_dir`, its weights must be there (see docs/models.md)."""
    force_offline()
    weights_path = None
    if weights_dir is not None:
        weights_path = Path(weights_dir) / spec.weights_name
        if not weights_path.exists():
            raise FileNotFoundError(
                f"{spec.profile_key}: expected weights at {weights_path} (file names are listed in "
                f"docs/models.md); omit --weights-dir to use random weights"
            )
    else:
        warn_random_weights()
    start = time.perf_counter()
    builder = {"yolo": _build_yolo, "effnet": _build_effnet, "albert": _build_albert}[spec.family]
    module, names = builder(spec, weights_path)
    module.eval().requires_grad_(False)
    return BuiltModel(
        spec=spec,
        module=module,
        class_names=names,
        params=sum(p.numel() for p in module.parameters()),
        build_s=time.perf_counter() - start,
        weights=str(weights_path) if weights_path else "random",
    )


def coco_names() -> list[str]:
    """The 80 COCO class names, from the dataset YAML bundled with ultralytics."""
    force_offline()
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    names = YAML.load(check_yaml("coco.yaml"))["names"]
    return [names[i] for i in sorted(names)]


def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names torchvision ships in its weight metadata (no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _build_yolo(spec: VariantSpec, weights: Path | None) -> tuple[torch.nn.Module, list[str]]:
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    if weights is not None:
        model, _ = load_checkpoint(weights, device="cpu", fuse=True)
        names = model.names
        return model, [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    model = DetectionModel(f"{spec.name}.yaml", verbose=False)
    return model.fuse(verbose=False), coco_names()


def _build_effnet(spec: VariantSpec, weights: Path | None) -> tuple[torch.nn.Module, list[str]]:
    from torchvision.models import get_model

    model = get_model(f"efficientnet_{spec.name}", weights=None)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model, imagenet_names()


def _build_albert(spec: VariantSpec, weights: Path | None) -> tuple[torch.nn.Module, None]:
    from transformers import AlbertConfig, AlbertForQuestionAnswering

    if weights is not None:
        return AlbertForQuestionAnswering.from_pretrained(weights, local_files_only=True), None
    size = ALBERT_SIZES[spec.name]
    config = AlbertConfig(
        vocab_size=ALBERT_VOCAB,
        embedding_size=ALBERT_EMBEDDING,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        max_position_embeddings=max(512, ALBERT_MAX_SEQ_LEN),
        hidden_act="gelu_new",
    )
    return AlbertForQuestionAnswering(config), None
