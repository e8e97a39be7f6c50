"""ONNX support: import, export, conversion to YAML and an onnx backend.

Entry points: ``flowgrad.load("model.onnx")`` (:mod:`flowgrad.loaders.onnx_loader`),
:func:`flowgrad.onnx.export.export_onnx` and :func:`flowgrad.onnx.to_yaml.write_yaml`.

Submodules, one job each: :mod:`~flowgrad.onnx.translations` (:class:`Translations`, the
table of import and export translations a family or a plugin declares),
:mod:`~flowgrad.onnx.ops` (the built-in translations, one module per op family),
:mod:`~flowgrad.onnx.model_io` (reading models, external data, version conversion),
:mod:`~flowgrad.onnx.importer` (ModelProto -> Graph, error collection),
:mod:`~flowgrad.onnx.builder` (values, naming, constant folding), :mod:`~flowgrad.onnx.opset`
(which translation serves a model's opset), :mod:`~flowgrad.onnx.export` (Graph -> ModelProto,
model-local functions), :mod:`~flowgrad.onnx.to_yaml`, :mod:`~flowgrad.onnx.verify` (output
comparisons for the CLI), :mod:`~flowgrad.onnx.backend` (``onnx.backend.base.Backend``) and
:mod:`~flowgrad.onnx.conformance` (running onnx's conformance suite).
"""
from .translations import Translations

__all__ = ["Translations"]
