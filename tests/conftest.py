import jax
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile("ci")


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX arrays."""
    with jax.enable_x64(True):
        yield
