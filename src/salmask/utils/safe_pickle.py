"""Reading pickled ``.npy`` files without running them: a restricted unpickler for numpy arrays and torch tensors.

``np.save`` of a dict writes a 0-d object array whose payload is a pickle; IRNet-style ``make_cam`` outputs
carry torch tensors inside it, whose storage is itself a ``torch.save`` blob (``torch.storage._load_from_bytes``).
:func:`load_npy_object` parses the ``.npy`` header itself and unpickles the payload with
:class:`RestrictedUnpickler`, which resolves only the globals needed to rebuild numpy arrays and dtypes, torch
tensors (their storage through ``torch.load(..., weights_only=True)``) and plain containers; any other global —
``os.system``, ``builtins.eval``, a class with a ``__reduce__`` — is refused before anything is called, with an
:class:`~salmask.errors.InputError` naming the file.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from numpy.lib import format as npy_format

from salmask.errors import InputError


class Refused(Exception):
    """A pickle asked for something the restricted unpickler does not rebuild."""


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` as ``ndarray.__reduce__`` calls it: an empty ndarray that ``__setstate__`` fills.

    numpy always pickles ``(ndarray, (0,), b'b')``; anything else (a subclass, a non-empty shape that would
    allocate before any data is read) is refused."""
    if subtype is not NDARRAY or not isinstance(shape, tuple) or any(not isinstance(n, int) for n in shape) \
            or int(np.prod(shape)) != 0:
        raise Refused(f"numpy _reconstruct({getattr(subtype, '__name__', subtype)!r}, {shape!r})")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


class _NdarrayToken:
    """What the name ``numpy.ndarray`` resolves to: accepted by :func:`_reconstruct` only, so a pickle cannot
    call ``ndarray(shape)`` itself and allocate an array of any size."""


NDARRAY = _NdarrayToken()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 array rebuild (``numpy._core.numeric._frombuffer``) on in-band bytes."""
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise Refused("numpy _frombuffer on something other than bytes of a plain dtype")
    return np.frombuffer(buf, dtype).reshape(shape, order=order)


def _scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's scalar rebuild (``multiarray.scalar``) for plain dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise Refused("numpy scalar of an object dtype")
    return np.frombuffer(data, dtype, count=1)[0]


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes``: the storage's own ``torch.save`` blob, read with ``weights_only``."""
    if not isinstance(data, (bytes, bytearray)):
        raise Refused("a torch storage that is not bytes")
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise Refused(f"a torch storage blob holding a {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` on a storage rebuilt by :func:`_load_storage` (torch checks the
    view against the storage's size); gradients and hooks are dropped."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise Refused("a torch tensor without a storage")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise Refused("a torch tensor with a malformed view")
    from torch._utils import _rebuild_tensor_v2

    return _rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    return collections.OrderedDict(*args)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """How protocol 2 pickles ``bytes``: ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise Refused("_codecs.encode with another codec")
    return text.encode(encoding)


ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    **{(mod, "_reconstruct"): _reconstruct for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): _scalar for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): _frombuffer for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): _ordered_dict,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
"""Every global a pickle may name: numpy arrays, dtypes and scalars (numpy 1 and 2 module paths), torch
tensors and their storages, plain containers. Numpy's dtype classes (``numpy.dtypes.Float32DType``), which
numpy 2 may name, are added below."""
for _name in dir(getattr(np, "dtypes", object)):
    if _name.endswith("DType") and _name not in ("ObjectDType", "StringDType", "VoidDType"):
        ALLOWED[("numpy.dtypes", _name)] = getattr(np.dtypes, _name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED` globals and no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"the global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent id")


def loads_restricted(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (raises :class:`Refused` or the unpickler's errors)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def read_npy_header(head: bytes, path: str | os.PathLike) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, payload offset) from the first bytes of a ``.npy`` file; InputError
    naming ``path`` when they are not a ``.npy`` header. Never unpickles."""
    f = io.BytesIO(head)
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as e:  # ValueError for a bad magic / header, EOFError-like for a short file
        raise InputError(path, f"not a .npy file ({str(e)[:160]})") from None
    return shape, fortran, dtype, f.tell()


NPY_HEAD_BYTES = 1 << 16
"""Enough for any header numpy writes (a 2.0 header is at most 4 GiB in principle, 128-aligned in practice)."""


def load_npy_object(path: str | os.PathLike) -> Any:
    """The object in a ``.npy`` file: a pickled 0-d object array's item (e.g. the dict ``np.save`` wrote), read
    with :class:`RestrictedUnpickler`; a plain array read without pickle. InputError naming ``path`` for a
    missing, truncated or foreign file, or a pickle that names anything but arrays, tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None
    shape, fortran, dtype, offset = read_npy_header(data[:NPY_HEAD_BYTES], path)
    if not dtype.hasobject:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise InputError(path, f"corrupt or truncated .npy ({str(e)[:160]})") from None
    try:
        obj = loads_restricted(data[offset:])
    except Refused as e:
        raise InputError(path, f"refused to unpickle {e}: only numpy arrays, torch tensors and plain containers "
                               f"are read from a .npy") from None
    except Exception as e:  # truncated or corrupt pickle: UnpicklingError, EOFError, ValueError, TypeError...
        raise InputError(path, f"corrupt or truncated pickled .npy ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(obj, np.ndarray) or obj.shape != shape or obj.dtype != dtype:
        raise InputError(path, f"the pickled payload is not the object array of shape {shape} the header declares")
    return obj.item() if obj.shape == () else obj
