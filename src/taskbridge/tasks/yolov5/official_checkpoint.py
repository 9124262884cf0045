"""Read an official YOLOv5 v6 `yolov5*.pt` without the YOLOv5 code and without running its pickle.

The official checkpoints pickle the whole `models.yolo.Model` object, so `torch.load(weights_only=True)`
refuses them and a full `torch.load` would need the (AGPL) YOLOv5 package and would run whatever the
pickle asks for. Here `data.pkl` is unpickled by `_RestrictedUnpickler`, which resolves only an explicit
allow-list of globals and maps every module class to an inert `_Stub` that merely keeps its pickled
state; tensors stay `_TensorRef` descriptions until the state dict is assembled, so no `__setstate__`
of torch or of a foreign class ever runs. Anything else is refused as `WeightsLoadError`.

The result has the layout of the plain re-save (`yolov5n_state_dict.pt`):
{"state_dict": {name: tensor}, "yaml": dict, "names": list[str], "stride": tensor}.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import torch

from ... import hub
from ...hub import WeightsLoadError

#: typed-storage globals (`torch.HalfStorage`, ...) -> element dtype of the zip's `data/<key>` record
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

#: module classes an official v6 checkpoint pickles; each becomes an inert `_Stub`, never the real class.
#: `DetectionModel` is the v7.0 name of `Model`.
_MODULE_CLASSES: dict[str, tuple[str, ...]] = {
    "models.yolo": ("Model", "DetectionModel", "Detect"),
    "models.common": ("Conv", "C3", "Bottleneck", "SPPF", "Concat"),
    "torch.nn.modules.container": ("Sequential", "ModuleList"),
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm2d",),
    "torch.nn.modules.activation": ("SiLU",),
    "torch.nn.modules.pooling": ("MaxPool2d",),
    "torch.nn.modules.upsampling": ("Upsample",),
}

_MODEL_CLASSES = frozenset({"models.yolo.Model", "models.yolo.DetectionModel"})


class _Stub:
    """Inert stand-in for a pickled module object: it only keeps the state dict it is given."""

    __slots__ = ("state",)
    state: dict[str, Any]
    qualname: ClassVar[str] = ""

    def __new__(cls, *args: Any) -> _Stub:
        if args:  # NEWOBJ/REDUCE with arguments would mean a constructor call we do not model
            raise pickle.UnpicklingError(f"'{cls.qualname}' created with arguments")
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError(f"'{self.qualname}' state is not a dict of attributes")
        self.state = state

    def __repr__(self) -> str:
        return f"<stub {self.qualname}>"


def _stub_class(qualname: str) -> type[_Stub]:
    return type(f"_Stub[{qualname}]", (_Stub,), {"__slots__": (), "qualname": qualname})


_STUBS: dict[tuple[str, str], type[_Stub]] = {
    (module, name): _stub_class(f"{module}.{name}") for module, names in _MODULE_CLASSES.items() for name in names
}


class _StorageType:
    """What `torch.HalfStorage` etc. resolve to: only the dtype of the records that name it."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


class _StorageRef:
    """A `data/<key>` record of the zip, not read until a tensor that uses it is materialized."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, key: str, dtype: torch.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a storage")


class _TensorRef:
    """A tensor as the pickle describes it (storage, offset, size, stride), checked against the storage."""

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a tensor")


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if isinstance(x, int | tuple | list) and not isinstance(x, bool):
        t = (x,) if isinstance(x, int) else tuple(x)
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in t):
            return t
    raise pickle.UnpicklingError(f"tensor {what} {x!r} is not a tuple of non-negative ints")


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _TensorRef:
    """Stand-in for `torch._utils._rebuild_tensor_v2`: validates and describes, allocates nothing."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage record")
    (offset,) = _int_tuple(storage_offset, "offset")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(f"tensor size {shape} and stride {strides} differ in length")
    if all(shape):  # the last element addressed must lie inside the storage
        end = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 1
        if end > storage.numel:
            raise pickle.UnpicklingError(f"tensor {shape} at offset {offset} runs past storage "
                                         f"'{storage.key}' of {storage.numel} elements")
    return _TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> _TensorRef:
    """Stand-in for `torch._utils._rebuild_parameter`: a parameter is just its tensor here."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


def _allowed_global(module: str, name: str) -> Any:
    """The allow-list: every global the unpickler may resolve, each to an inert or self-written object."""
    if (module, name) in _STUBS:
        return _STUBS[module, name]
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
        return _rebuild_tensor_v2
    if module == "torch._utils" and name == "_rebuild_parameter":
        return _rebuild_parameter
    if module == "collections" and name == "OrderedDict":
        return OrderedDict
    if module in ("builtins", "__builtin__") and name == "set":  # Module._non_persistent_buffers_set
        return set
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; storages become lazy `_StorageRef`s of the zip's records."""

    def __init__(self, data: bytes, path: Path, records: set[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path
        self._records = records
        self._storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_global(module, name)
        if obj is None:
            raise WeightsLoadError(
                f"{self._path}: refused to unpickle global '{module}.{name}': not on the allow-list of an "
                f"official YOLOv5 checkpoint (the file may hold code); nothing was run")
        return obj

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"storage of unknown type {stype!r}")
        if not isinstance(key, str) or key not in self._records:
            raise pickle.UnpicklingError(f"storage record 'data/{key}' is not in the archive")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise pickle.UnpicklingError(f"storage '{key}' has an invalid size {numel!r}")
        ref = self._storages.get(key)
        if ref is None:
            ref = self._storages[key] = _StorageRef(key, stype.dtype, numel)
        elif (ref.dtype, ref.numel) != (stype.dtype, numel):
            raise pickle.UnpicklingError(f"storage '{key}' is named with two different types or sizes")
        return ref


class _Reader:
    """Turns `_TensorRef`s into CPU tensors, reading each zip record once."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str) -> None:
        self._zf, self._prefix = zf, prefix
        self._bases: dict[str, torch.Tensor] = {}

    def tensor(self, ref: Any, what: str) -> torch.Tensor:
        if not isinstance(ref, _TensorRef):
            raise pickle.UnpicklingError(f"{what} is a {type(ref).__name__}, not a tensor")
        st = ref.storage
        base = self._bases.get(st.key)
        if base is None:
            raw = self._zf.read(f"{self._prefix}data/{st.key}")
            need = st.numel * torch.empty((), dtype=st.dtype).element_size()
            if len(raw) < need:
                raise pickle.UnpicklingError(f"storage record 'data/{st.key}' holds {len(raw)} bytes, "
                                             f"{need} expected")
            base = (torch.frombuffer(bytearray(raw[:need]), dtype=st.dtype) if need
                    else torch.empty(0, dtype=st.dtype))
            self._bases[st.key] = base
        return base.as_strided(ref.size, ref.stride, ref.offset)


def _state_dict(module: _Stub, reader: _Reader, prefix: str = "", out: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
    """`nn.Module.state_dict()` order and names from the stubs: parameters, persistent buffers, children."""
    out = {} if out is None else out
    st = module.state
    skip = st.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = st.get(group) or {}
        if not isinstance(entries, dict):
            raise pickle.UnpicklingError(f"{prefix or 'model.'}{group} is not a dict")
        for name, ref in entries.items():
            if ref is None or (group == "_buffers" and name in skip):
                continue
            out[prefix + name] = reader.tensor(ref, f"'{prefix}{name}'")
    children = st.get("_modules") or {}
    if not isinstance(children, dict):
        raise pickle.UnpicklingError(f"{prefix or 'model.'}_modules is not a dict")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, _Stub):
            raise pickle.UnpicklingError(f"submodule '{prefix}{name}' is a {type(child).__name__}")
        _state_dict(child, reader, f"{prefix}{name}.", out)
    return out


def _check_plain(obj: Any, what: str) -> None:
    """The architecture dict must be plain data (it is handed to the model builder as is)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, what)
            _check_plain(v, what)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _check_plain(v, what)
    elif not (obj is None or isinstance(obj, str | int | float | bool)):
        raise pickle.UnpicklingError(f"{what} holds a {type(obj).__name__}")


def _pickle_record(zf: zipfile.ZipFile) -> str:
    """Name of the top-level `<dir>/data.pkl` of a torch zip checkpoint."""
    for name in zf.namelist():
        if name.endswith("/data.pkl") and name.count("/") == 1:
            return name
    raise pickle.UnpicklingError("no <archive>/data.pkl in the zip: not a torch checkpoint")


def read_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """{"state_dict", "yaml", "names", "stride"} of an official YOLOv5 v6 `.pt`, read without running it.

    Prefers `ema` when it holds a model (as YOLOv5's own loader does), else `model`. Tensors keep the
    stored dtype (fp16 in the releases). Raises `WeightsLoadError` (one line naming the file) for a refused
    global, a truncated/corrupt archive, or a pickle that is not a YOLOv5 checkpoint.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = _pickle_record(zf)
            prefix = pkl[: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in zf.namelist() and zf.read(byteorder).decode().strip() != sys.byteorder:
                raise pickle.UnpicklingError("the tensors are stored with the other byte order")
            records = {n[len(prefix) + 5:] for n in zf.namelist() if n.startswith(f"{prefix}data/")}
            ckpt = _RestrictedUnpickler(zf.read(pkl), path, records).load()
            if not isinstance(ckpt, dict):
                raise pickle.UnpicklingError(f"the pickle holds a {type(ckpt).__name__}, not a checkpoint dict")
            model = ckpt.get("ema")
            if not (isinstance(model, _Stub) and model.qualname in _MODEL_CLASSES):
                model = ckpt.get("model")
            if not (isinstance(model, _Stub) and model.qualname in _MODEL_CLASSES):
                raise pickle.UnpicklingError(f"neither 'ema' nor 'model' holds a YOLOv5 model (keys {sorted(ckpt)})")
            attrs = model.state
            for key in ("yaml", "names", "stride"):
                if key not in attrs:
                    raise pickle.UnpicklingError(f"the model has no '{key}' attribute")
            yaml, names = attrs["yaml"], attrs["names"]
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names)]
            if not (isinstance(yaml, dict) and isinstance(names, list | tuple)
                    and all(isinstance(n, str) for n in names)):
                raise pickle.UnpicklingError("the model's yaml is not a dict or its names are not strings")
            _check_plain(yaml, "the model's yaml")
            reader = _Reader(zf, prefix)
            return {"state_dict": _state_dict(model, reader), "yaml": yaml, "names": list(names),
                    "stride": reader.tensor(attrs["stride"], "the model's stride")}
    except WeightsLoadError:
        raise
    except Exception as err:  # truncated, corrupt, or not shaped like a YOLOv5 checkpoint
        msg = (str(err).splitlines() or [""])[0] or "the file ends early"
        raise WeightsLoadError(f"{path}: not a readable official YOLOv5 checkpoint "
                               f"({type(err).__name__}: {msg})") from None


def is_official_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a torch zip whose pickle names a `models.yolo` global (scanned, not unpickled)."""
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(_pickle_record(zf))
        strings: list[str] = ["", ""]  # the last two string literals: STACK_GLOBAL's (module, name)
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "GLOBAL" and str(arg).split(" ", 1)[0] == "models.yolo":
                return True
            if op.name == "STACK_GLOBAL" and strings[-2] == "models.yolo":
                return True
            if isinstance(arg, str):
                strings = [strings[-1], arg]
    except Exception:  # not a zip / corrupt: the ordinary loader reports it
        return False
    return False


def load_yolov5_state(weights: str | os.PathLike[str]) -> Any:
    """What the YOLOv5 task reads: an official `.pt` through the restricted reader, anything else
    (a hub name, a plain re-saved state dict) through `hub.load_state`."""
    path = hub.weights_path(weights)  # a hub name may point at the official file itself
    if is_official_checkpoint(path):
        return read_official_checkpoint(path)
    return hub.load_state(path)
