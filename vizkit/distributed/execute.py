"""Execute a notebook headless with papermill, its kernel on IPC sockets.

A kernel started over TCP (jupyter_client's default) logs "Kernel is running over TCP without
encryption" at every start, once per notebook of ``make demo`` or ``vizkit run``. The kernels
vizkit starts talk to it over Unix-domain sockets instead (``transport="ipc"``, files in
Jupyter's runtime folder): nothing listens on a port at all, and the user sees only the
notebook's own lines.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ipc_kernel_manager", "execute_notebook"]


@functools.cache
def ipc_kernel_manager() -> type:
    """An ``AsyncKernelManager`` subclass whose kernels use the ``ipc`` transport (built on first
    use: jupyter_client is imported lazily)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            # jupyter_client's default is "kernel-ipc" in the working directory, numbered by checking which
            # files exist: kernels started at once by two processes there can take the same sockets (and
            # then reject each other's messages: "Invalid Signature"). A private folder per kernel cannot.
            import tempfile

            return os.path.join(tempfile.mkdtemp(prefix="vizkit-kernel-"), "ipc")

    return IPCKernelManager


def execute_notebook(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    kernel_name: str = "python3",
    cwd: str | os.PathLike[str] | None = None,
    log_output: bool = False,
    progress_bar: bool = False,
) -> Any:
    """``papermill.execute_notebook`` with the kernel on IPC sockets (:func:`ipc_kernel_manager`, see
    the module docstring); returns the executed notebook. A failing cell raises papermill's
    ``PapermillExecutionError``."""
    import papermill as pm

    return pm.execute_notebook(
        str(notebook),
        str(output),
        parameters=dict(parameters or {}),
        kernel_name=kernel_name,
        progress_bar=progress_bar,
        log_output=log_output,
        cwd=str(cwd) if cwd is not None and Path(cwd).is_dir() else None,
        kernel_manager_class=ipc_kernel_manager(),
    )
