"""Loading open_clip models: built-in architectures, a model-config JSON, pretrained tags, local
weight files and `hf-hub:` names (docs/methods.md, formats), plus seeded random weights for tests.

Every loaded model carries an identity (architecture config + weights) that keys the embedding
and image-feature caches, so two models never share cached vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text, canonical_json, sha256_file
from promptgen.messages import shorten

__all__ = ["ClipModel", "load_clip", "check_device", "list_clip_models", "RANDOM_WEIGHTS", "TINY_MODEL"]

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
TINY_MODEL = "promptgen-tiny"
RANDOM_WEIGHTS = ("random", "none")
_registered = False


def _register_project_configs() -> None:
    global _registered
    if not _registered:
        import open_clip  # heavy: seconds to import, and work on cached features never needs it

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def list_clip_models() -> list[str]:
    """Architectures open_clip knows, including the project's own (e.g. `promptgen-tiny`)."""
    import open_clip

    _register_project_configs()
    return sorted(open_clip.list_models())


@dataclass
class ClipModel:
    """An open_clip model ready for inference, with what identifies it."""

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Callable[[Any], torch.Tensor]
    arch: str                    # what the user asked for (name, config path or hf-hub: name)
    weights: str                 # tag, file path, hf-hub: name or random:seed=N
    identity: dict = field(default_factory=dict)
    device: str = "cpu"

    @property
    def key(self) -> str:
        """Short hash of the identity: the cache folder for this model's vectors."""
        return hashlib.sha256(canonical_json(self.identity).encode()).hexdigest()[:20]

    @property
    def embed_dim(self) -> int:
        return int(self.identity["embed_dim"])

    @property
    def context_length(self) -> int:
        return int(self.identity["context_length"])

    def describe(self) -> dict:
        """What a head's sidecar or an eval report records about the model."""
        return {"arch": self.arch, "weights": self.weights, "key": self.key, **self.identity}


def _file_sha256(path: Path, cache: Path | None) -> str:
    """sha256 of a weights file, remembered by (path, size, mtime) so a 600 MB file is hashed once."""
    stat = path.stat()
    memo_key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache / "weights" / f"{memo_key}.json" if cache else None
    if memo and memo.exists():
        try:
            return json.loads(memo.read_text())["sha256"]
        except (ValueError, KeyError):
            pass
    value = sha256_file(path)
    if memo:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, json.dumps({"path": str(path.resolve()), "sha256": value}) + "\n")
    return value


def _config_from_file(path: Path, cache: Path | None) -> tuple[str, dict]:
    """Register a user's model-config JSON under a name derived from its content, so it can never
    shadow a built-in architecture and two different files never share a name."""
    import open_clip

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptgenError(f"cannot read the model config {path}: {exc}",
                             "give an open_clip model-config JSON (embed_dim, vision_cfg, text_cfg)") from exc
    if isinstance(config, dict):
        config = config.get("model_cfg", config)  # open_clip_config.json files wrap it
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
        raise PromptgenError(f"{path} is not an open_clip model config: it needs embed_dim, vision_cfg and text_cfg",
                             "see open_clip/model_configs/*.json for the format")
    name = "user-" + hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]
    folder = (cache or Path(os.environ.get("TMPDIR", "/tmp"))) / "model_configs"
    target = folder / f"{name}.json"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(config, indent=2) + "\n")
    open_clip.add_model_config(target)
    return name, config


def _offline_hint(arch: str, pretrained: str) -> str:
    return (f"download the weights where there is network (e.g. open_clip.create_model('{arch}', "
            f"pretrained='{pretrained}') fills ~/.cache/huggingface), then copy that cache here, or pass a local "
            f"file: --pretrained /path/to/open_clip_model.safetensors; use --pretrained random for untrained weights")


def check_device(device: str) -> None:
    """A CUDA device must exist before anything is loaded onto it."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}, but no GPU is visible"
            raise PromptgenError(f"--device {device}: this machine has no CUDA device (torch {torch.__version__} "
                                 f"was built {build})", "use --device cpu, or run on a machine with an NVIDIA GPU")
        index = int(device.split(":", 1)[1]) if ":" in device and device.split(":", 1)[1].isdigit() else 0
        if index >= torch.cuda.device_count():
            raise PromptgenError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible",
                                 f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def load_clip(arch: str = "ViT-B-32", pretrained: str | None = "openai", *, device: str = "cpu", seed: int = 0,
              cache: Path | None = None) -> ClipModel:
    """Load an open_clip model.

    `arch` is a built-in architecture (`open_clip.list_models()`, plus `promptgen-tiny`), a path to a
    model-config JSON, or `hf-hub:org/repo`. `pretrained` is a tag (`openai`, `laion2b_s34b_b79k`), a
    local state-dict file, or `random`/`none` for weights initialised from `seed`. `cache` is the
    root's `cache/` folder, used to remember weight-file hashes and user configs.
    """
    import open_clip

    check_device(device)
    _register_project_configs()
    if str(pretrained or "").startswith(("hf-hub:", "local-dir:")):
        arch, pretrained = str(pretrained), None  # the hub repo holds both config and weights
    config_path = Path(arch).expanduser()
    identity: dict[str, Any] = {}
    if arch.startswith(("hf-hub:", "local-dir:")):
        name, config = arch, None
    elif arch.endswith(".json") or config_path.is_file():
        if not config_path.is_file():
            raise PromptgenError(f"model config {arch} not found", "give the path to an open_clip model-config JSON")
        name, config = _config_from_file(config_path, cache)
    else:
        name, config = arch, open_clip.get_model_config(arch)
        if config is None:
            known = list_clip_models()
            close = [m for m in known if arch.lower().replace("/", "-") in m.lower()][:8]
            raise PromptgenError(f"unknown CLIP architecture {arch!r}",
                                 f"choose one of `promptgen clip-models` (e.g. {', '.join(close or known[:6])}), "
                                 f"or give a model-config JSON path or hf-hub:org/repo")
    random_weights = pretrained is None or str(pretrained).lower() in RANDOM_WEIGHTS
    if arch.startswith(("hf-hub:", "local-dir:")):
        weights = arch
        random_weights = False
    elif random_weights:
        weights = f"random:seed={seed}"
        # random init depends on the library versions: a cache must not outlive them
        identity["init"] = {"seed": seed, "torch": torch.__version__, "open_clip": open_clip.__version__}
    elif Path(str(pretrained)).expanduser().is_file():
        weights = str(Path(str(pretrained)).expanduser().resolve())
        identity["weights_sha256"] = _file_sha256(Path(weights), cache)
    else:
        tags = open_clip.list_pretrained_tags_by_model(name) if config is not None else []
        if pretrained not in tags:
            looks_like_path = os.sep in str(pretrained) or str(pretrained).endswith((".pt", ".bin", ".safetensors", ".pth"))
            if looks_like_path:
                raise PromptgenError(f"weights file {pretrained} not found",
                                     "check the path, or give a pretrained tag such as `openai`")
            raise PromptgenError(f"{arch} has no pretrained tag {pretrained!r}",
                                 f"tags for {arch}: {', '.join(tags) or '(none)'}; or give a local weights file, "
                                 f"or `random`")
        weights = str(pretrained)
    torch.manual_seed(seed)
    logging.disable(logging.ERROR)  # open_clip logs to the root logger; our error below says it better
    try:
        if random_weights:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device,
                                                                          pretrained_text=False)
        elif arch.startswith(("hf-hub:", "local-dir:")):
            model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except PromptgenError:
        raise
    except Exception as exc:  # open_clip raises RuntimeError/OSError/HF/pickle/assertion errors
        first_line = shorten((str(exc).splitlines() or [type(exc).__name__])[0], 300)
        if Path(weights).is_file():
            raise PromptgenError(f"cannot load weights {weights} for {arch}: {type(exc).__name__}: {first_line}",
                                 f"give a state-dict (or open_clip checkpoint) saved from a {arch} model, and the "
                                 f"--clip-model it was trained with") from exc
        raise PromptgenError(f"cannot load weights {weights} for {arch}: {first_line}",
                             _offline_hint(arch, str(pretrained))) from exc
    finally:
        logging.disable(logging.NOTSET)
    model.eval()
    text_config = (config or {}).get("text_cfg", {})
    context_length = getattr(model, "context_length", None) or text_config.get("context_length", 77)
    with torch.inference_mode():
        probe = model.encode_text(tokenizer(["a"]).to(device))
    identity.update({"arch_config_sha256": "sha256:" + hashlib.sha256(canonical_json(config).encode()).hexdigest()
                     if config is not None else None,
                     "name": name if not name.startswith("user-") else f"config:{config_path.name}",
                     "weights": weights if not weights.startswith("/") else f"file:{Path(weights).name}",
                     "embed_dim": int(probe.shape[-1]), "context_length": int(context_length)})
    return ClipModel(model=model, tokenizer=tokenizer, preprocess=preprocess, arch=arch, weights=weights,
                     identity=identity, device=device)
