"""One device resolver: what ``device=`` means everywhere (record, analyze, rebuild, the pair kernels).

``resolve_device(device)``:

- ``None`` or ``"auto"`` → ``"cuda"`` when torch sees a CUDA GPU, else ``"cpu"`` (never an error);
- ``"cpu"`` → ``"cpu"``;
- ``"cuda"`` / ``"cuda:K"`` → itself when that GPU exists, else :class:`~trajkit.errors.DeviceError`
  (one line: the key, what torch found, the fix) — a GPU that was asked for is never silently replaced;
- anything else → :class:`~trajkit.errors.DeviceError` naming the valid forms.

torch is imported only when CUDA has to be looked up, so ``"cpu"`` costs nothing.

>>> resolve_device("cpu")
'cpu'
"""

from __future__ import annotations

import re

from trajkit.errors import DeviceError

__all__ = ["is_device_name", "resolve_device"]

_NAME = re.compile(r"(cpu|cuda|cuda:\d+|auto)")


def is_device_name(text: str) -> bool:
    """True for ``cpu``, ``cuda``, ``cuda:K`` or ``auto`` (syntax only; says nothing about the machine)."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def _cuda() -> tuple[int, str]:
    """(number of CUDA devices torch sees, torch's version or "not installed")."""
    try:
        import torch
    except ImportError:
        return 0, "not installed"
    return (torch.cuda.device_count() if torch.cuda.is_available() else 0), torch.__version__


def resolve_device(device: str | None = None, *, key: str = "device") -> str:
    """The device to run on: ``"cpu"``, ``"cuda"`` or ``"cuda:K"`` (rules in the module docstring).

    ``key`` names the setting in the error (``"device"``, ``"run.device"``).
    """
    if device is None or device == "auto":
        return "cuda" if _cuda()[0] > 0 else "cpu"
    if not is_device_name(str(device)):
        raise DeviceError(f"{key} = {device!r} is not a device; use cpu, cuda, cuda:K or auto")
    if device == "cpu":
        return "cpu"
    n, version = _cuda()
    if n == 0:
        raise DeviceError(f"{key} = {device!r} but torch finds no CUDA GPU here (torch {version}); use cpu")
    k = int(device.split(":", 1)[1]) if ":" in device else 0
    if k >= n:
        raise DeviceError(f"{key} = {device!r} but only {n} CUDA device(s) exist (cuda:0..cuda:{n - 1})")
    return str(device)
