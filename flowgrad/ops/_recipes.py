"""Recipes: what an op's forward works out from an input signature and its attributes, kept.

Why: at batch 1 a small op's arithmetic takes a few microseconds, and working out its geometry
again — a conv's strategy and views, a pool's window, a pad's crops and fills — took as long
(a conv 15 µs, a max pool 7 of 15, a pad 15 of 20).  None of it depends on the values, only on
the shapes and dtypes of the inputs and on the attributes, and a model feeds an op one
signature or a few (batch sizes, image sizes).  So an op keeps a recipe per signature, and
setting an attribute drops them all.
"""
from __future__ import annotations

from typing import Any, Hashable

#: input signatures whose recipe an op keeps; past that it drops them all
RECIPES = 32


class KeepsRecipes:
    """Mixin for an op (before :class:`~flowgrad.op.Op` among its bases) that keeps recipes in
    ``self._recipes`` (``{signature: recipe}``): looked up by the op itself in its hot path,
    stored with :meth:`_keep`."""

    def __setattr__(self, name: str, value: Any) -> None:
        # a recipe depends on the attributes too: setting one drops every recipe
        if name in self.attrs:
            self.__dict__["_recipes"] = {}
        super().__setattr__(name, value)

    def _keep(self, key: Hashable, recipe: Any) -> Any:
        """Keep ``recipe`` for the signature ``key`` (at most :data:`RECIPES`); returns it."""
        if len(self._recipes) >= RECIPES:
            self._recipes.clear()
        self._recipes[key] = recipe
        return recipe
