"""Data tests write their decoded-image cache into a temporary folder, never into the user's cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _image_cache(tmp_path_factory):
  patch = pytest.MonkeyPatch()
  patch.setenv("NAS_FORGETTING_CACHE", str(tmp_path_factory.mktemp("nas_forgetting_cache")))
  yield
  patch.undo()
