"""pytest runs every notebook (strict nbval) and tests/ in the offline environment of nbsupport.offline."""

import shutil
import tempfile

from nbsupport.offline import enter_offline_env

_root = tempfile.mkdtemp(prefix="pytest-offline-")
enter_offline_env(_root)  # before anything imports huggingface_hub, which reads these variables once


def pytest_unconfigure(config):
    shutil.rmtree(_root, ignore_errors=True)
