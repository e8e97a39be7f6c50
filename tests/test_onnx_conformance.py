"""onnx's backend conformance suite, run through flowgrad's onnx Backend.

Every node test of every op flowgrad claims runs here (a few seconds in all); the cases listed
in KNOWN_FAILURES fail for the stated reason and are reported as failures by
``benchmarks/onnx_conformance.py``.  A case not listed must pass; a listed one that starts
passing is reported so the list shrinks.  All pytorch-converted and pytorch-operator model
tests and two light ImageNet models run too (the report script runs all nine).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import flowgrad

from flowgrad.onnx import conformance as C

#: node tests that fail, with why (see docs/onnx.md, "What does not pass"); a listed case that
#: starts passing fails test_node_tests_of_claimed_op, so the list only shrinks.  Empty: every
#: node test of every claimed op passes (cases using dtypes numpy lacks are excluded instead).
KNOWN_FAILURES: dict[str, str] = {}


#: claimed ops the installed onnx has no node test for: random generators, whose values no test
#: can fix; tests/test_ops_breadth.py checks them (seeded draws against onnx's reference
#: evaluator, unseeded ones against their distribution).  A listed op that gains node tests
#: fails test_node_tests_of_claimed_op, so the list only shrinks.
WITHOUT_NODE_TESTS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                      "Multinomial",
                      # sequence ops onnx tests only in its "simple" model tests
                      # (test_sequence_model1-8), which tests/test_control_flow.py runs
                      "SequenceEmpty", "SequenceConstruct", "SequenceAt", "SequenceErase",
                      "SequenceLength", "ConcatFromSequence",
                      # tested inside If's node test test_if_opt
                      "Optional",
                      # tests/test_attention.py checks it against onnxruntime
                      "GlobalLpPool"}


@pytest.fixture(scope="module")
def node_results():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return C.by_group(C.node_results(C.CLAIMED_OPS))


@pytest.mark.parametrize("op", C.CLAIMED_OPS)
def test_node_tests_of_claimed_op(op, node_results):
    results = node_results.get(op, [])
    if op in WITHOUT_NODE_TESTS:
        assert not results, f"onnx now has node tests for {op}: remove it from WITHOUT_NODE_TESTS"
        return
    assert results, f"the installed onnx has no node tests for {op}"
    failing = {r.name: r.message for r in results if r.status == "fail"}
    unexpected = {k: v for k, v in failing.items() if k not in KNOWN_FAILURES}
    assert not unexpected, "\n".join(f"{k}: {v}" for k, v in unexpected.items())
    fixed = [r.name for r in results if r.status == "pass" and r.name in KNOWN_FAILURES]
    assert not fixed, f"now passing, remove from KNOWN_FAILURES: {fixed}"


def test_excluded_cases_only_use_dtypes_numpy_lacks(node_results):
    for results in node_results.values():
        for r in results:
            if r.status == "excluded":
                assert r.message.split()[-1] in C.NUMPY_LACKS.values(), r


@pytest.mark.parametrize("kind", ["pytorch-converted", "pytorch-operator"])
def test_model_tests(kind):
    dirs = C.model_dirs(kind)
    assert len(dirs) == {"pytorch-converted": 82, "pytorch-operator": 35}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        failing = [r for r in (C.run_model_dir(d, kind) for d in dirs) if r.status != "pass"]
    assert not failing, "\n".join(f"{r.name}: {r.message}" for r in failing)


def test_light_shufflenet():
    (path,) = [p for p in C.light_models() if p.endswith("light_shufflenet.onnx")]
    result = C.run_light(path)
    assert result.status == "pass", result.message


def test_light_squeezenet():
    """onnx's light SqueezeNet ends in Conv (1000 identical weight rows) -> Relu ->
    GlobalAveragePool -> Softmax, with logits near 9.5e9: equal in exact arithmetic, so the
    expected output is uniform (0.001 each).  In float32 an ulp of such a logit is ~1e3, and
    which BLAS kernel computes a row of the product (a full block or an edge one; which
    depends on the row's position and on BLAS's thread count) can change that row's last bit
    — after which the softmax is anything from uniform to one-hot.  So the float32-meaningful
    form of the expectation is checked: the logits agree to float32 rounding, and the output
    is a distribution over them."""
    import onnx
    (path,) = [p for p in C.light_models() if p.endswith("light_squeezenet.onnx")]
    model = onnx.load(path)
    softmax = model.graph.node[-1]
    assert softmax.op_type == "Softmax"
    graph = flowgrad.load(path)
    plan = flowgrad.compile(graph)
    (x,) = C.light_inputs(model)
    out = plan.forward({graph.inputs[0]: x},
                       outputs=(softmax.input[0], softmax.output[0]), grad=False)
    logits = out[softmax.input[0]].astype(np.float64).ravel()
    assert logits.size == 1000 and abs(logits.mean() - 9.4757e9) < 1e6
    np.testing.assert_allclose(logits, logits[0], rtol=1e-6)
    probs = out[softmax.output[0]].astype(np.float64).ravel()
    assert np.all(probs >= 0) and abs(probs.sum() - 1) < 1e-5


def test_unsupported_case_fails_instead_of_passing():
    """A model with an op flowgrad lacks must fail at prepare, never count as 'not supposed to
    implement'."""
    case = next(c for c in C.node_cases() if c.name == "test_image_decoder_decode_jpeg_rgb")
    result = C.run_node_case(case)
    assert result.status == "fail" and "unsupported op" in result.message
