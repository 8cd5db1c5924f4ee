"""Keep TensorFlow's C++ log lines out of the terminal.

TensorFlow 2.21 writes oneDNN, CUDA and XLA notices from C++ through absl, straight to file descriptor 2,
at import, at its first device probe and at every compilation, whatever TF_CPP_MIN_LOG_LEVEL says. To a
user of the CLI they are noise around the one line that matters. So the `stn` entry point points file
descriptor 2 at /dev/null and gives Python's `sys.stderr` a duplicate of the real one: C++ output
disappears, while every message, warning and traceback from Python still reaches the terminal.
Set STN_NATIVE_LOGS=1 to keep the native lines (for debugging TensorFlow itself).
"""

from __future__ import annotations

import os
import sys


def hide_native_stderr() -> None:
    if os.environ.get("STN_NATIVE_LOGS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, errors="backslashreplace")
