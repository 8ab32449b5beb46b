"""medfew: few-shot diagnosis of rare diseases in medical images.

The public API is re-exported lazily from the subpackages so that ``import medfew`` stays light and
never imports streamlit.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
