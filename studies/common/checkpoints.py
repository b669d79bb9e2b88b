"""Safetensors checkpoints keyed by a hash of their configuration, so trained models are reused."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tensornet.io import atomic_path

from .cli import StudyError
from .data import DatasetSplits
from .training import evaluate, train

# train() arguments that change where or how visibly training runs, not its result.
_UNKEYED = ("device", "progress", "log")


def config_key(config: Mapping[str, Any]) -> str:
    """A stable 12-hex-digit hash of a JSON-serialisable configuration (key order irrelevant)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def save_checkpoint(model: nn.Module, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write ``model.state_dict()`` to ``path`` as safetensors, atomically.

    Each metadata value is stored JSON-encoded (safetensors metadata is str -> str); the file is
    written next to its destination and moved into place, so readers never see a partial file.
    safetensors stores tensors sorted by dtype and name, so the state_dict's order is kept in
    the metadata entry ``order`` (a JSON list of the names), which ``tensornet spectra`` reads.
    """
    # Cloning breaks storage sharing between entries, which safetensors refuses to write.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {str(k): json.dumps(v, sort_keys=True, default=str) for k, v in metadata.items()}
    meta["order"] = json.dumps(list(tensors))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint written by :func:`save_checkpoint`."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    return {k: json.loads(v) for k, v in raw.items() if k != "order"}


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` (strict: keys and shapes must match).

    Returns
    -------
    dict
        The checkpoint's metadata, JSON-decoded.
    """
    state = load_file(str(path))
    model.load_state_dict(state, strict=True)
    return read_metadata(path)


def _fingerprint(data: DatasetSplits) -> dict[str, Any]:
    """Name, sizes and a hash of the labels in split order: a different seed or limit shows."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        digest.update(split.tensors[1].numpy().tobytes())
    sizes = [len(data.train), len(data.val), len(data.test)]
    return {"name": data.name, "sizes": sizes, "labels": digest.hexdigest()[:16]}


def checkpoint_path(
    config: Mapping[str, Any],
    data: DatasetSplits,
    cache_dir: str | Path,
    train_kwargs: Mapping[str, Any],
) -> tuple[Path, str]:
    """Where :func:`train_or_load` keeps the checkpoint of this configuration, and its key.

    Known before training, so a run can check an existing checkpoint before it writes anything.
    """
    keyed = {k: v for k, v in train_kwargs.items() if k not in _UNKEYED}
    key = config_key({"config": config, "train": keyed, "data": _fingerprint(data)})
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config.get("model", "model")))
    return Path(cache_dir) / f"{name}-{key}.safetensors", key


def check_checkpoint(path: str | Path, build: Callable[[], nn.Module]) -> None:
    """Check that an existing checkpoint can be loaded into ``build()``'s model.

    Raises
    ------
    StudyError
        The file is truncated or corrupt, its metadata is not ours, or its tensors do not fit
        the model; the message names the file and says to delete it (it is then retrained).
    """
    path = Path(path)
    remedy = "delete it to train the model again"
    try:
        read_metadata(path)
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise StudyError(f"{path}: not a readable checkpoint ({reason}); {remedy}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StudyError(f"{path}: its metadata is not a study checkpoint's; {remedy}") from None
    try:
        build().load_state_dict(state, strict=True)
    except RuntimeError:
        raise StudyError(f"{path}: its tensors do not fit the model; {remedy}") from None


def train_or_load(
    build: Callable[[], nn.Module],
    config: Mapping[str, Any],
    data: DatasetSplits,
    cache_dir: str | Path,
    train_kwargs: Mapping[str, Any],
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Train a model once per configuration and reuse the checkpoint afterwards.

    The checkpoint is ``cache_dir/<name>-<key>.safetensors`` where ``name`` is ``config["model"]``
    (or ``"model"``) and ``key`` hashes ``config``, ``train_kwargs`` (bar ``device``,
    ``progress`` and ``log``) and a fingerprint of ``data`` (name, split sizes, labels).
    ``build`` must create the same initial model every call (seed inside it) for the cache to
    be meaningful.

    Parameters
    ----------
    build
        Creates the untrained model.
    config
        JSON-serialisable description of the run, stored in the metadata.
    data
        Splits to train on; the test accuracy is recorded.
    cache_dir
        Where checkpoints live.
    train_kwargs
        Keyword arguments for :func:`studies.common.training.train` (``epochs`` required).

    Returns
    -------
    model, metadata, reused
        The trained model in eval mode (on ``train_kwargs["device"]``, CPU by default); metadata
        with ``config``, ``train_kwargs``, ``data``, ``history``, ``test_accuracy``,
        ``train_seconds``; and whether an existing checkpoint was loaded instead of training.
    """
    keyed = {k: v for k, v in train_kwargs.items() if k not in _UNKEYED}
    path, key = checkpoint_path(config, data, cache_dir, train_kwargs)
    device = train_kwargs.get("device", "cpu")
    model = build()
    if path.is_file():
        metadata = load_checkpoint(model, path)
        return model.to(device).eval(), metadata, True
    start = time.perf_counter()
    history = train(model, data, **train_kwargs)
    metadata = {
        "key": key,
        "config": dict(config),
        "train_kwargs": keyed,
        "data": _fingerprint(data),
        "history": history,
        "test_accuracy": evaluate(model, data.test, device=device),
        "train_seconds": time.perf_counter() - start,
    }
    save_checkpoint(model, path, metadata)
    return model.eval(), metadata, False
