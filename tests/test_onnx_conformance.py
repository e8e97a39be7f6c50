"""onnx's backend conformance suite, run through flowgrad's onnx Backend.

Every node test of every op flowgrad claims runs here (a few seconds in all); the cases listed
in KNOWN_FAILURES fail for the stated reason and are reported as failures by
``benchmarks/onnx_conformance.py``.  A case not listed must pass; a listed one that starts
passing is reported so the list shrinks.  All pytorch-converted and pytorch-operator model
tests and two light ImageNet models run too (the report script runs all nine).
"""
from __future__ import annotations

import warnings

import pytest

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


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_light_models(name):
    (path,) = [p for p in C.light_models() if p.endswith(f"light_{name}.onnx")]
    result = C.run_light(path)
    assert result.status == "pass", result.message


def test_unsupported_case_fails_instead_of_passing():
    """A model with an op flowgrad lacks must fail at prepare, never count as 'not supposed to
    implement'."""
    case = next(c for c in C.node_cases() if c.name == "test_image_decoder_decode_jpeg_rgb")
    result = C.run_node_case(case)
    assert result.status == "fail" and "unsupported op" in result.message
