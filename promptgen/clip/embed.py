"""The text embedding engine every head uses: de-duplicate, look up the disk cache, encode what is
missing in length-grouped batches, and for causal text towers run only the positions that matter.

Context trimming (docs/methods.md, speed): in a causal tower position i attends only to positions
<= i, and the pooled feature is read at the end-of-text token, so running the transformer on the
first L positions (L = the longest prompt in the batch, EOT included) with the positional embedding
and causal mask sliced to L gives the same vectors as the full 77-token pass. Sorting prompts by
token length keeps L small for every batch. A tower without a strict causal mask (or pooled at the
last position, or with padding masks or a CoCa class token) is detected and encoded the plain way,
and a self-check against `encode_text` at start-up guards against open_clip internals changing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from promptgen.clip.models import ClipModel
from promptgen.fileio import atomic_write_text, sha256_file

__all__ = ["TextEncoder", "EmbeddingCache", "EncodeStats"]

log = logging.getLogger(__name__)

_SELF_CHECK_TEXTS = ["a photo of a dog.", "x", "a centered satellite photo of a large annual crop field, "
                     "with rows of green plants and a dirt road running along its edge."]


def _shard_name(vectors: np.ndarray, texts: list[str]) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
                          + json.dumps(texts).encode()).hexdigest()[:24]


class EmbeddingCache:
    """Vectors of one model, on disk as shards: `<sha>.npy` (float32, one row per text) and
    `<sha>.json` (the exact texts, row order, and the shard's sha256). The JSON is written last, so a
    shard without it never counts; a shard whose bytes no longer match its checksum is deleted and
    its texts are encoded again. No pickle anywhere."""

    def __init__(self, folder: Path, model_description: dict | None = None) -> None:
        self.folder = folder
        self.model_description = model_description or {}
        self._index: dict[str, tuple[str, int]] | None = None
        self._shards: dict[str, np.ndarray] = {}
        self.corrupt_shards = 0

    def _load_index(self) -> dict[str, tuple[str, int]]:
        if self._index is None:
            self._index = {}
            if self.folder.is_dir():
                for sidecar in sorted(self.folder.glob("*.json")):
                    try:
                        texts = json.loads(sidecar.read_text(encoding="utf-8"))["texts"]
                    except (OSError, ValueError, KeyError):
                        log.warning("ignoring unreadable embedding-cache index %s", sidecar)
                        continue
                    for row, text in enumerate(texts):
                        self._index.setdefault(text, (sidecar.stem, row))
        return self._index

    def _shard(self, name: str) -> np.ndarray | None:
        if name not in self._shards:
            sidecar, array_path = self.folder / f"{name}.json", self.folder / f"{name}.npy"
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                data = array_path.read_bytes()
                if "sha256:" + hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    raise ValueError("checksum mismatch")
                array = np.load(io.BytesIO(data), allow_pickle=False)  # the bytes just checked
                if array.shape[0] != len(meta["texts"]):
                    raise ValueError("row count mismatch")
                # the name is a digest of vectors and texts: an edited text list cannot pass
                if _shard_name(array, meta["texts"]) != name:
                    raise ValueError("texts do not match the shard")
            except (OSError, ValueError, KeyError) as exc:
                log.warning("embedding-cache shard %s is corrupt (%s): deleted, its texts will be encoded again",
                            array_path, exc)
                self.corrupt_shards += 1
                for path in (sidecar, array_path):
                    path.unlink(missing_ok=True)
                index = self._load_index()
                for text in [t for t, (shard, _) in index.items() if shard == name]:
                    del index[text]
                return None
            self._shards[name] = array
        return self._shards[name]

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        index = self._load_index()
        found: dict[str, np.ndarray] = {}
        for text in texts:
            where = index.get(text)
            if where is None:
                continue
            shard = self._shard(where[0])
            if shard is not None:
                found[text] = shard[where[1]]
        return found

    def put(self, texts: list[str], vectors: np.ndarray) -> None:
        if not texts:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        payload_digest = _shard_name(vectors, texts)
        array_path = self.folder / f"{payload_digest}.npy"
        temp = self.folder / f".{payload_digest}.{os.getpid()}.npy"
        np.save(temp, vectors, allow_pickle=False)
        os.replace(temp, array_path)
        checksum = sha256_file(array_path)
        atomic_write_text(self.folder / f"{payload_digest}.json",
                          json.dumps({"model": self.model_description, "dim": int(vectors.shape[1]),
                                      "dtype": "float32", "sha256": checksum, "texts": texts},
                                     ensure_ascii=False) + "\n")
        index = self._load_index()
        self._shards[payload_digest] = vectors
        for row, text in enumerate(texts):
            index[text] = (payload_digest, row)


@dataclass
class EncodeStats:
    requested: int = 0
    unique: int = 0
    from_cache: int = 0
    encoded: int = 0
    batches: int = 0
    positions: int = 0          # token positions run through the tower
    full_positions: int = 0     # what the plain 77-token pass would have run
    seconds: float = 0.0
    corrupt_shards: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _TextTower:
    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    attn_mask: torch.Tensor
    ln_final: torch.nn.Module
    text_projection: Any
    pool_type: str
    eos_id: int | None
    cast_dtype: torch.dtype = field(default=torch.float32)


def _is_strictly_causal(mask: torch.Tensor | None) -> bool:
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    upper = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
    return bool(torch.isneginf(mask[upper]).all()) and bool(torch.isfinite(mask[~upper]).all())


def causal_text_tower(model: torch.nn.Module) -> _TextTower | None:
    """The parts of a text tower that context trimming needs, or None when trimming would not be
    exact for it (no causal mask, last-token pooling, padding masks, a CoCa class token, HF towers)."""
    from open_clip.transformer import TextTransformer

    if all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "attn_mask")):
        owner, pool_type, eos_id = model, getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None)
    elif isinstance(getattr(model, "text", None), TextTransformer):
        owner = model.text
        if owner.cls_emb is not None or getattr(owner, "use_pad_mask", False):
            return None
        pool_type, eos_id = owner.pool_type, getattr(owner, "eos_id", None)
    else:
        return None
    mask = getattr(owner, "attn_mask", None)
    if pool_type not in ("argmax", "eos", "first") or not _is_strictly_causal(mask):
        return None
    if pool_type == "eos" and eos_id is None:
        return None
    return _TextTower(owner.token_embedding, owner.positional_embedding, owner.transformer, mask, owner.ln_final,
                      owner.text_projection, pool_type, eos_id, owner.transformer.get_cast_dtype())


def _pool_positions(tower: _TextTower, tokens: torch.Tensor) -> torch.Tensor:
    if tower.pool_type == "argmax":
        return tokens.argmax(dim=-1)
    if tower.pool_type == "eos":
        return (tokens == tower.eos_id).int().argmax(dim=-1)
    return torch.zeros(tokens.shape[0], dtype=torch.long)


def _encode_trimmed(tower: _TextTower, tokens: torch.Tensor, length: int) -> torch.Tensor:
    """open_clip's encode_text on the first `length` positions only (docs/methods.md, speed)."""
    from open_clip.transformer import text_global_pool

    tokens = tokens[:, :length]
    x = tower.token_embedding(tokens).to(tower.cast_dtype)
    x = x + tower.positional_embedding[:length].to(tower.cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    x = text_global_pool(x, tokens, tower.pool_type, eos_token_id=tower.eos_id)
    if tower.text_projection is not None:
        x = tower.text_projection(x) if isinstance(tower.text_projection, torch.nn.Linear) else x @ tower.text_projection
    return x


class TextEncoder:
    """Encode texts with a CLIP text tower: raw `encode_text` features (not normalised), float32.

    `cache_dir` is the root's `cache/` (vectors go to `cache/embeddings/<model key>/`); None keeps
    nothing on disk. `trim=False` forces the plain full-context pass.
    """

    def __init__(self, clip: ClipModel, cache_dir: Path | None = None, *, batch_size: int = 256,
                 tokens_per_batch: int = 8192, trim: bool = True, show_progress: bool = False) -> None:
        self.clip = clip
        self.batch_size = batch_size
        self.tokens_per_batch = tokens_per_batch
        self.show_progress = show_progress
        self.cache = EmbeddingCache(cache_dir / "embeddings" / clip.key, clip.describe()) if cache_dir else None
        self.stats = EncodeStats()
        self.tower = causal_text_tower(clip.model) if trim else None
        self.trim_reason = "causal text tower" if self.tower else ("disabled" if not trim else
                                                                    "text tower is not strictly causal")
        if self.tower is not None and not self._self_check():
            self.tower = None
            self.trim_reason = "self-check against encode_text failed"
            log.warning("context trimming disabled for %s: it did not reproduce encode_text", clip.arch)

    @property
    def trimming(self) -> bool:
        return self.tower is not None

    def _self_check(self) -> bool:
        tokens = self.clip.tokenizer(_SELF_CHECK_TEXTS).to(self.clip.device)
        with torch.inference_mode():
            plain = self.clip.model.encode_text(tokens).float()
            lengths = _pool_positions(self.tower, tokens) + 1
            trimmed = _encode_trimmed(self.tower, tokens, int(lengths.max())).float()
        return bool(torch.allclose(plain, trimmed, atol=1e-5, rtol=1e-4))

    def _encode_missing(self, texts: list[str]) -> np.ndarray:
        tokens = self.clip.tokenizer(texts)
        context = tokens.shape[1]
        if self.tower is not None:
            lengths = (_pool_positions(self.tower, tokens) + 1).tolist()
        else:
            lengths = [context] * len(texts)
        out = np.empty((len(texts), self.clip.embed_dim), dtype=np.float32)
        batches = self._length_grouped_batches(lengths)
        if self.show_progress and len(batches) > 1:
            batches = tqdm(batches, desc="encoding texts", unit="batch", leave=False)
        with torch.inference_mode():
            for rows in batches:
                batch = tokens[rows].to(self.clip.device)
                if self.tower is not None:
                    length = max(lengths[i] for i in rows)
                    features = _encode_trimmed(self.tower, batch, length)
                else:
                    length = context
                    features = self.clip.model.encode_text(batch)
                out[rows] = features.float().cpu().numpy()
                self.stats.batches += 1
                self.stats.positions += length * len(rows)
                self.stats.full_positions += context * len(rows)
        return out

    def _length_grouped_batches(self, lengths: list[int]) -> list[list[int]]:
        """Rows sorted by token length, cut into batches of at most `batch_size` prompts and
        `tokens_per_batch` positions, and a new batch once lengths grow by half, so short prompts
        rarely pay for a long one's length."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        for row in order:
            if current and (len(current) == self.batch_size or
                            (len(current) + 1) * lengths[row] > self.tokens_per_batch or
                            (len(current) >= 16 and lengths[row] > 1.5 * lengths[current[0]])):
                batches.append(current)
                current = []
            current.append(row)
        if current:
            batches.append(current)
        return batches

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), D) raw features, row i for texts[i]; identical texts are encoded once."""
        started = time.perf_counter()
        unique = list(dict.fromkeys(texts))
        self.stats.requested += len(texts)
        self.stats.unique += len(unique)
        found = self.cache.get(unique) if self.cache else {}
        missing = [t for t in unique if t not in found]
        self.stats.from_cache += len(unique) - len(missing)
        if missing:
            vectors = self._encode_missing(missing)
            self.stats.encoded += len(missing)
            if self.cache:
                self.cache.put(missing, vectors)
            found.update(zip(missing, vectors))
        if self.cache:
            self.stats.corrupt_shards = self.cache.corrupt_shards
        result = torch.from_numpy(np.stack([found[t] for t in texts])) if texts else \
            torch.empty((0, self.clip.embed_dim))
        self.stats.seconds += time.perf_counter() - started
        return result

    def encode_normalized(self, texts: Sequence[str]) -> torch.Tensor:
        """e(t) of docs/methods.md: L2-normalised features."""
        return F.normalize(self.encode(texts), dim=-1)
