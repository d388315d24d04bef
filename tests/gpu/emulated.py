"""An emulated CUDA device on a CPU-only machine, to run the GPU tier's *placement* checks where no GPU is lent.

What it proves, and what not. A tensor "on cuda" here is a wrapper (`Emulated`) whose data lives on the CPU but
whose `.device` is not the CPU (lazy:0, see DEVICE), and every operation on it keeps it there. So code that would
fail on a real GPU for where its tensors are fails here too, in PyTorch's words:
- `.numpy()` / `np.asarray()` of a tensor on the GPU ("can't convert cuda:0 device type tensor to numpy");
- an operation that mixes a GPU tensor with a CPU tensor that is not a 0-d scalar ("Expected all tensors to be on
  the same device"), including a CPU tensor indexed by GPU indices;
- a result handed back on the GPU where the device rule (package docstring) wants the CPU.
The first real GPU run failed in exactly these ways, in every chapter. What it cannot prove: CUDA kernels, their
numerics, speed and memory (bench/bench_7b.py and the real tier, `bash tests/gpu/run.sh`, on a GPU). `torch.cuda`
answers as a 24 GB card with nothing allocated, so the batch sizes follow the free-memory path, and memory never
runs out (the halving on out-of-memory is tested apart). Known gaps: the emulated device's type is not "cuda", so
code that branches on `device.type == "cuda"` takes its CPU branch; modes are per thread, so work in a new thread
is not emulated; CUDA events, pinned memory and `torch.cuda.get_device_properties` are not there.

Use:  `make gpu-emulated` (= `pytest tests/gpu tests/unit/test_devices.py -p tests.gpu.emulated`: the GPU tier, whose
      subprocesses inherit the emulation through emulated_site/sitecustomize.py; `make test` runs it), or
      `with emulated_cuda(): ...` in a test. Validated on ab45e63, the code of the first H200 run: it stops chapters
      1-5 at the lines where the H200 stopped them (and appendices A and B, which that run did not reach)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# The tensors report the device type `lazy`: autograd asks a device's guard for its streams, and besides the CPU the
# only device type a CPU build of PyTorch has a guard for is lazy (a tensor that reports cuda aborts the process).
# Nothing else here uses lazy tensors, so lazy:0 *is* the GPU: moves to cuda land on it, and the library's
# `model.device` still says cuda.
DEVICE = torch.device("lazy", 0)
CPU = torch.device("cpu")
CARD_BYTES = 24 * 2 ** 30   # what mem_get_info reports: the 24 GB card of issue 14's memory goal
SITE = Path(__file__).parent / "emulated_site"
ENV = "LLAVAMECH_EMULATED_CUDA"

# Operations real PyTorch lets a CUDA tensor meet a CPU tensor in: copies across devices, and a CUDA tensor indexed
# (or index-assigned) by CPU indices. Everything else that mixes them raises, as on a GPU.
CROSS_DEVICE = {"aten::copy_", "aten::_to_copy", "aten::_copy_from", "aten::_copy_from_and_resize"}
CPU_INDICES_ALLOWED = {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"}


class Emulated(torch.Tensor):
    """A tensor on the emulated GPU (lazy:0); `inner` holds its data on the CPU. Operations on it are run by
    EmulatedDispatch, which is on whenever one exists."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(), dtype=inner.dtype,
                                                  device=DEVICE, requires_grad=inner.requires_grad,
                                                  storage_offset=inner.storage_offset())
        out.inner = inner
        return out

    def __repr__(self, *, tensor_contents=None):
        return f"Emulated({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an emulated GPU tensor outside emulated_cuda()")


def _inner(x):
    return x.inner if isinstance(x, Emulated) else x


def _emulated(device) -> bool:
    return device is not None and torch.device(device).type == DEVICE.type


def _check_devices(func, args, kwargs):
    """Raise as PyTorch does on a GPU when an operation mixes devices."""
    name = func._schema.name
    if name in CROSS_DEVICE:
        return
    if name in CPU_INDICES_ALLOWED:
        if not isinstance(args[0], Emulated) and any(isinstance(x, Emulated) for x in tree_flatten(args[1])[0]):
            raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        args = (args[0],) + tuple(args[2:])
    tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
    # a 0-d CPU tensor passes as a scalar only in element-wise operations (TensorIterator's), as on CUDA
    scalars_pass = torch.Tag.pointwise in func.tags
    on_cpu = [x for x in tensors if not isinstance(x, Emulated) and (x.dim() > 0 or not scalars_pass)]
    if on_cpu and len(on_cpu) < len(tensors):
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"cuda:0 (emulated as lazy:0) and cpu! (in {name})")


class EmulatedDispatch(TorchDispatchMode):
    """Below autograd: an operation on Emulated tensors, or one that makes a tensor on lazy:0, runs on their CPU
    data, and its results are Emulated again; `_to_copy` to the CPU gives a plain tensor."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        makes = _emulated(kwargs.get("device"))
        if not makes and not any(isinstance(x, Emulated) for x in tree_flatten((args, kwargs))[0]):
            return func(*args, **kwargs)
        _check_devices(func, args, kwargs)
        if makes:
            kwargs["device"] = CPU
        out = func(*tree_map(_inner, args), **tree_map(_inner, kwargs))
        if "device" in kwargs and not makes:
            return out   # .cpu(), .to("cpu"), a factory on the CPU
        if func._schema.is_mutable and isinstance(args[0], Emulated):
            if args[0].inner.shape != args[0].shape:   # a wrapper's own shape cannot follow (see _vector_product)
                raise NotImplementedError(f"{func} changes the shape of an emulated tensor in place; the emulation "
                                          "cannot follow it")
            return args[0]   # in place: the wrapper itself
        return tree_map(lambda x: Emulated(x) if isinstance(x, torch.Tensor) and not isinstance(x, Emulated)
                        else x, out)


def _on_device(device):
    """A device argument, with cuda (the library's name for the GPU) made the emulated lazy:0."""
    if isinstance(device, (str, torch.device, int)) and not isinstance(device, bool):
        if isinstance(device, int) or torch.device(device).type == "cuda":
            return DEVICE
    return device


DATA = torch._C.TensorBase.__dict__["data"]   # the descriptor behind Tensor.data
MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.nn.functional.linear)


def _vector_product(func, args, kwargs):
    """A product with a vector, written with matrices: PyTorch's matmul unsqueezes a vector and squeezes its result
    *in place* (squeeze_), which changes the shape under a wrapper tensor; as matrices it means the same."""
    a, b, *rest = args
    if func is torch.nn.functional.linear:
        return func(a[None], b, *rest, **kwargs)[0]
    if a.dim() == 1 and b.dim() == 1:
        return func(a[None], b[:, None])[0, 0]
    return func(a[None], b)[..., 0, :] if a.dim() == 1 else func(a, b[:, None])[..., 0]


def _index_lists_on_cpu(index):
    """x[:, [1, 2]] on a GPU tensor: PyTorch builds the index tensor from the list on the GPU with every mode off;
    as a CPU index tensor (which a GPU tensor accepts) it means the same."""
    if isinstance(index, list) and all(isinstance(i, (int, bool)) for i in index):
        return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(map(_index_lists_on_cpu, index))
    return index


class EmulatedCudaMode(TorchFunctionMode):
    """Above the dispatcher: `cuda` as a device means lazy:0 (PyTorch without CUDA refuses cuda before any mode
    sees the operation), and NumPy refuses a tensor on the GPU as it does on a real one."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and isinstance(args[0], Emulated):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        if getattr(func, "__self__", None) is DATA and func.__name__ == "__set__" and isinstance(args[0], Emulated):
            # Module._apply's `param.data = new`: the wrapper takes the new data's metadata, and its CPU data too
            func(*args)
            args[0].inner = _inner(args[1])
            return None
        if func is torch.Tensor.tolist and isinstance(args[0], Emulated):
            return args[0].inner.tolist()
        if func is torch.Tensor.cuda:
            func, args, kwargs = torch.Tensor.to, (args[0], DEVICE), {
                k: v for k, v in kwargs.items() if k == "non_blocking"}
        elif func is torch.Tensor.to:
            args = (args[0], *map(_on_device, args[1:]))
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], Emulated):
            args = (args[0], _index_lists_on_cpu(args[1]), *args[2:])
        if (func in MATMULS and len(args) >= 2 and any(isinstance(a, Emulated) for a in args[:2])
                and min(args[0].dim(), args[1].dim()) == 1 and not (func is torch.nn.functional.linear
                                                                    and args[0].dim() > 1)):
            return _vector_product(func, args, kwargs)
        if func in (torch.tensor, torch.as_tensor):   # their data read with every mode off: from the CPU copy
            on_gpu = bool(args) and isinstance(args[0], Emulated)
            args = tree_map(_inner, args)
            if on_gpu and "device" not in kwargs:   # made from a GPU tensor, the result stays on the GPU (from a
                # list of GPU scalars, PyTorch reads their values and makes a CPU tensor, as here)
                return func(*args, **kwargs).to(DEVICE)
        if isinstance(kwargs.get("generator"), torch.Generator) and _emulated(_on_device(kwargs.get("device"))) \
                and kwargs["generator"].device.type == "cpu":
            raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")
        if func is not torch._C._nn._parse_to and _emulated(_on_device(kwargs.get("device"))):
            # a factory (torch.tensor, torch.zeros, ... device=...): made on the CPU, then moved (some, such as
            # torch.tensor, build their data where no dispatch mode sees it)
            kwargs["device"] = CPU
            return tree_map(lambda x: x.to(DEVICE) if isinstance(x, torch.Tensor) else x, func(*args, **kwargs))
        return func(*args, **kwargs)


class _CudaAnswers:
    """What torch.cuda answers on the emulated card."""

    def __init__(self):
        self.saved = {}

    def install(self):
        answers = dict(is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
                       get_device_name=lambda *a: "emulated CUDA (CPU)", _lazy_init=lambda: None,
                       mem_get_info=lambda *a: (CARD_BYTES, CARD_BYTES), synchronize=lambda *a: None,
                       empty_cache=lambda: None, reset_peak_memory_stats=lambda *a: None,
                       max_memory_allocated=lambda *a: 0, memory_allocated=lambda *a: 0,
                       memory_reserved=lambda *a: 0, get_per_process_memory_fraction=lambda *a: 1.0,
                       is_bf16_supported=lambda *a: True, manual_seed=lambda *a: None,
                       manual_seed_all=lambda *a: None)
        for name, answer in answers.items():
            self.saved[name] = getattr(torch.cuda, name, None)
            setattr(torch.cuda, name, answer)

    def remove(self):
        for name, saved in self.saved.items():
            setattr(torch.cuda, name, saved)


@contextlib.contextmanager
def emulated_cuda():
    """Within: torch.cuda is a 24 GB card, and tensors moved to it are Emulated (see the module docstring)."""
    answers = _CudaAnswers()
    answers.install()
    try:
        with EmulatedDispatch(), EmulatedCudaMode():
            yield
    finally:
        answers.remove()


_ACTIVE = []


def start():
    """Turn the emulation on for the rest of this process (pytest plugin, sitecustomize) and its subprocesses."""
    if not _ACTIVE:
        context = emulated_cuda()
        context.__enter__()
        _ACTIVE.append(context)
    start_in_subprocesses(os.environ)


def start_in_subprocesses(env: dict):
    """Python subprocesses started with `env` turn the emulation on as they start (emulated_site/sitecustomize.py)."""
    if env.get(ENV) != "1":
        env[ENV] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), *filter(None, [env.get("PYTHONPATH")])])


def pytest_configure(config):
    """As a pytest plugin (-p tests.gpu.emulated): the whole session runs on the emulated card."""
    start()
