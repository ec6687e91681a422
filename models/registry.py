"""Which network architecture each configured service variant is, and what input it takes.

The variant list, profile keys and published accuracies live in `configs/services.yaml`; this
module only adds what is needed to *build* and *feed* each variant (architecture name, input
resolution, expected local weight file). Keeping the two apart means accuracy figures have a
single source, and a variant added to the config without an architecture here fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configs.loader import load_services
from configs.schema import Variant

Family = Literal["yolo", "effnet", "albert"]

# Service name in configs/services.yaml → the model family that implements it.
SERVICE_FAMILY: dict[str, Family] = {"yolo": "yolo", "efficientnet": "effnet", "albert": "albert"}

YOLO_IMAGE_SIZE = 640
ALBERT_MAX_SEQ_LEN = 384  # SQuAD convention and what the bundled H100 profiles used.

# EfficientNet (crop, resize) per variant: the paper-native crop resolutions (what the bundled
# profiles measured) with torchvision's IMAGENET1K_V1 resize-before-crop; b2 keeps its native
# 260 crop although torchvision evaluates its own b2 weights at 288.
EFFNET_RESOLUTION: dict[str, tuple[int, int]] = {
    "b0": (224, 256), "b1": (240, 256), "b2": (260, 288), "b3": (300, 320),
    "b4": (380, 384), "b5": (456, 456), "b6": (528, 528), "b7": (600, 600),
}


@dataclass(frozen=True)
class AlbertSize:
    """ALBERT v2 dimensions (Lan et al. 2020, table 1); all share embedding 128 and vocab 30000."""

    hidden: int
    layers: int
    heads: int
    intermediate: int


ALBERT_SIZES: dict[str, AlbertSize] = {
    "base": AlbertSize(768, 12, 12, 3072),
    "large": AlbertSize(1024, 24, 16, 4096),
    "xlarge": AlbertSize(2048, 24, 16, 8192),
    "xxlarge": AlbertSize(4096, 12, 64, 16384),
}
ALBERT_EMBEDDING = 128
ALBERT_VOCAB = 30000


@dataclass(frozen=True)
class VariantSpec:
    """Everything needed to build, feed and describe one variant."""

    service: str
    family: Family
    variant: Variant  # from configs/services.yaml: name, profile_key, accuracy, params_m, source

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def profile_key(self) -> str:
        return self.variant.profile_key

    @property
    def weights_name(self) -> str:
        """File (or directory) expected under `--weights-dir` for real weights."""
        if self.family == "yolo":
            return f"{self.name}.pt"
        if self.family == "effnet":
            return f"efficientnet_{self.name}.pth"
        return f"albert-{self.name}-v2"

    @property
    def image_size(self) -> int:
        """Square network input side in pixels (images only)."""
        if self.family == "yolo":
            return YOLO_IMAGE_SIZE
        if self.family == "effnet":
            return EFFNET_RESOLUTION[self.name][0]
        raise ValueError(f"{self.profile_key} takes text, not images")


def _check_known(service: str, family: Family, name: str) -> None:
    """YOLO names resolve through ultralytics' bundled YAMLs at build time; the others need a row here."""
    table = {"effnet": EFFNET_RESOLUTION, "albert": ALBERT_SIZES}.get(family)
    if table is not None and name not in table:
        raise KeyError(
            f"configs/services.yaml: variant {name!r} of service {service!r} has no known "
            f"architecture; add it to models/registry.py (known: {', '.join(table)})"
        )


def get_spec(service: str, variant: str) -> VariantSpec:
    """The spec of one configured variant (KeyError naming the known ones otherwise)."""
    svc = load_services().get(service)
    if service not in SERVICE_FAMILY:
        raise KeyError(f"service {service!r} has no model family; known: {', '.join(SERVICE_FAMILY)}")
    family = SERVICE_FAMILY[service]
    v = svc.variant(variant)
    _check_known(service, family, v.name)
    return VariantSpec(service=service, family=family, variant=v)


def service_specs(service: str) -> list[VariantSpec]:
    """All variants of a service, in config order (smallest to largest)."""
    return [get_spec(service, v.name) for v in load_services().get(service).variants]


def spec_for_profile_key(key: str) -> VariantSpec:
    """Look a variant up by its profile key (`"effnet:b0"`)."""
    for service in SERVICE_FAMILY:
        for spec in service_specs(service):
            if spec.profile_key == key:
                return spec
    raise KeyError(f"no configured variant has profile key {key!r}")
