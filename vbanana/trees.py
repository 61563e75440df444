"""Parameter trees by name: a tree path as keys, as one 'a/b/0/c' string, and nested dicts <-> flat dicts.

One spelling of a parameter's name for every part that needs one: optimizer-state shardings (setup), the
exported file (export), checkpoint entries and weight converters.
"""

from __future__ import annotations

from typing import Any

import jax

SEP = "/"


def path_keys(path) -> tuple:
  """The keys of a jax tree path (dict keys, sequence indices, attribute names), as plain values."""
  out = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        out.append(getattr(k, attr))
        break
    else:
      out.append(k)
  return tuple(out)


def key_of(path) -> str:
  """'a/b/0/c' from a jax tree path; the same string for nested dicts, lists and nnx.State."""
  return SEP.join(str(k) for k in path_keys(path))


def flatten(tree: Any) -> dict[str, Any]:
  """{'a/b/c': leaf} of a tree."""
  return {key_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict[str, Any]) -> dict:
  """Nested dicts from {'a/b/c': leaf}."""
  tree: dict = {}
  for k, v in flat.items():
    node = tree
    parts = k.split(SEP)
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return tree
