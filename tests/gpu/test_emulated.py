"""The emulated GPU (tests/gpu/emulated.py) refuses what a real GPU refuses and allows what it allows: otherwise its
runs of the GPU tier would prove nothing, or fail for nothing. Each refusal below is one a real run hit."""
import os

import numpy as np
import pytest
import torch

from tests.gpu import emulated
from tests.gpu.emulated import emulated_cuda

pytestmark = pytest.mark.skipif(os.environ.get(emulated.ENV) == "1" or torch.cuda.is_available(),
                                reason="checks the emulation itself, from a plain CPU session")


def test_moves_to_cuda_land_on_the_emulated_device_and_come_back_as_plain_cpu_tensors():
    with emulated_cuda():
        assert torch.cuda.is_available() and torch.cuda.mem_get_info()[0] == emulated.CARD_BYTES
        x = torch.arange(6.0).reshape(2, 3).to("cuda")
        assert x.device.type != "cpu" and (x * 2).device == x.device
        assert torch.zeros(2, device="cuda").device == x.device and torch.tensor([1], device=x.device).device == x.device
        back = (x + 1).cpu()
        assert type(back) is torch.Tensor and back.device.type == "cpu"
        np.testing.assert_array_equal(back.numpy(), np.arange(1.0, 7.0).reshape(2, 3))
    assert not torch.cuda.is_available()


def test_numpy_of_a_gpu_tensor_is_refused():
    with emulated_cuda():
        x = torch.ones(3).to("cuda")
        for convert in (lambda: x.numpy(), lambda: np.asarray(x), lambda: x.detach().float().numpy()):
            with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
                convert()
        assert x.tolist() == [1.0, 1.0, 1.0] and x.sum().item() == 3.0   # these work on a GPU


def test_mixing_devices_is_refused_as_on_a_gpu():
    with emulated_cuda():
        x, cpu = torch.ones(3).to("cuda"), torch.ones(3)
        with pytest.raises(RuntimeError, match="same device"):
            x + cpu
        with pytest.raises(RuntimeError, match="same device"):
            torch.cat([x, cpu])
        with pytest.raises(RuntimeError, match="indices should be either on cpu"):
            cpu[torch.tensor([0]).to("cuda")]
        with pytest.raises(RuntimeError, match="same device"):   # a 0-d CPU tensor is a scalar only element-wise
            x.index_select(0, torch.tensor(1))
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(2, device="cuda", generator=torch.Generator().manual_seed(0))
        assert torch.as_tensor(x).device == x.device and torch.tensor([x[0], x[1]]).device.type == "cpu"
        with pytest.raises(TypeError, match="to numpy"):
            torch.as_tensor(x).numpy()
        # what a GPU allows: a 0-d CPU scalar, CPU indices, a list index, copies across devices
        assert (x + torch.tensor(2.0)).device == x.device
        assert x[torch.tensor([0, 2])].shape == (2,) and x[[0, 1]].shape == (2,)
        x[torch.tensor([1])] = 5.0
        cpu.copy_(x)
        assert cpu.tolist() == [1.0, 5.0, 1.0]


def test_gradients_flow_and_modules_move():
    with emulated_cuda():
        layer = torch.nn.Linear(3, 2).to("cuda", torch.bfloat16).float()
        assert layer.weight.device.type != "cpu" and isinstance(layer.weight, torch.nn.Parameter)
        leaf = torch.ones(3, requires_grad=True)
        layer(leaf.to("cuda")).sum().backward()
        assert leaf.grad.device.type == "cpu" and layer.weight.grad.device == layer.weight.device


def test_products_with_vectors_keep_their_shapes():
    a, v, u = torch.randn(4, 5), torch.randn(5), torch.randn(4)
    with emulated_cuda():
        ac, vc, uc = (t.to("cuda") for t in (a, v, u))
        for got, want in ((ac @ vc, a @ v), (uc @ ac, u @ a), (vc @ vc, v @ v),
                          (torch.nn.functional.linear(vc, ac), torch.nn.functional.linear(v, a))):
            assert got.shape == want.shape
            torch.testing.assert_close(got.cpu(), want)


def test_the_tier_sees_a_gpu_and_a_subprocess_inherits_it(tmp_path):
    import subprocess
    import sys
    script = "import torch; x = torch.ones(1).to('cuda'); print(torch.cuda.is_available(), x.device.type)"
    env = dict(os.environ)
    emulated.start_in_subprocesses(env)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.split() == ["True", emulated.DEVICE.type], done.stderr[-2000:]
