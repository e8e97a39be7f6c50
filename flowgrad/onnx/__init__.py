"""ONNX support: translation tables, import machinery, export and an onnx backend.

``flowgrad.load("model.onnx")`` (see :mod:`flowgrad.loaders.onnx_loader`) and
:func:`flowgrad.onnx.export.export_onnx` are the entry points; the submodules hold the op
translations (:mod:`~flowgrad.onnx.handlers`), their versioning (:mod:`~flowgrad.onnx.opset`),
the graph builder with constant folding (:mod:`~flowgrad.onnx.builder`), safe model reading
(:mod:`~flowgrad.onnx.model_io`) and the conformance backend (:mod:`~flowgrad.onnx.backend`).
"""
