"""Import TensorFlow without its C++ start-up lines.

TensorFlow 2.21 prints oneDNN and CUDA notices from C++ through absl at import and at its first device
probe, before any Python
logging is set up and regardless of TF_CPP_MIN_LOG_LEVEL; they are noise to a user of the CLI. So the
import runs with file descriptor 2 pointed at a temporary file, which is replayed if the import fails.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow() -> None:
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing prints its CUDA notice here, not later
            failed = False
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
