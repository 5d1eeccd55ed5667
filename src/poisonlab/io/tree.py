"""Split nested state (dicts, lists, tensors, plain values) into a flat tensor table and a JSON tree."""

from __future__ import annotations

from typing import Any

import torch

_TENSOR = "__tensor__"
_ITEMS = "__items__"
_TUPLE = "__tuple__"


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Return ``(tensors, tree)``; tensors are replaced in the tree by ``{"__tensor__": key}``.

    Dicts with non-string keys (e.g. optimizer state keyed by int) keep their key types.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = obj.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj) and not ({_TENSOR, _ITEMS, _TUPLE} & set(obj)):
                return {k: walk(v) for k, v in obj.items()}
            return {_ITEMS: [[walk(k), walk(v)] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {_TUPLE: [walk(v) for v in obj]}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store a value of type {type(obj).__name__} in a checkpoint")

    return tensors, walk(state)


def unflatten_state(tensors: dict[str, torch.Tensor], tree: Any) -> Any:
    """Inverse of :func:`flatten_state`; raises KeyError/TypeError on a malformed tree."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            if _TENSOR in obj:
                return tensors[obj[_TENSOR]]
            if _ITEMS in obj:
                return {_hashable(walk(k)): walk(v) for k, v in obj[_ITEMS]}
            if _TUPLE in obj:
                return tuple(walk(v) for v in obj[_TUPLE])
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(tree)


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict, torch.Tensor)):
        raise TypeError("checkpoint tree has an unhashable dict key")
    return key
