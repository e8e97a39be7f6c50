"""ONNX translations of the attention family (being written; see issue 15)."""
from __future__ import annotations

from ..translations import Translations

T = Translations("attention")
