"""Graph passes: validation, branch insertion (idempotent), shape inference."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad import Graph, GraphError, Spec
from flowgrad.ops.dense import Dense
from flowgrad.ops.merge import Concat
from flowgrad.ops.activations import Relu
from flowgrad.passes import infer_shapes, insert_branches, prepare, validate


def tied_graph() -> Graph:
    """x -> relu -> (dense W) and (dense W) -> concat: h and W both have two readers."""
    g = Graph("tied")
    g.add_input("x", Spec((None, 3), np.float32))
    g.add_param("W", np.ones((3, 3), np.float32))
    g.add_op("h", Relu())
    g.add_op("a", Dense())
    g.add_op("b", Dense())
    g.add_op("m", Concat(axis=1), num_inputs=2)
    g.connect("x", 0, "h", 0)
    for node in ("a", "b"):
        g.connect("h", 0, node, 0)
        g.connect("W", 0, node, 1)
    g.connect("a", 0, "m", 0)
    g.connect("b", 0, "m", 1)
    g.outputs = ["m"]
    return g


def test_branches_are_inserted_for_activations_and_tied_params():
    g = insert_branches(tied_graph())
    assert {"h#branch", "W#branch"} <= set(g.dag.nodes)
    for name in ("h#branch", "W#branch"):
        assert g.is_branch(name) and g.op_of(name).n == 2
    # afterwards every output port has exactly one reader
    for node in g.dag.nodes:
        for port in range(g.num_outputs(node)):
            assert len(g.consumers(node, port)) <= 1


def test_branch_insertion_is_idempotent_and_pure():
    original = tied_graph()
    once = insert_branches(original)
    twice = insert_branches(once)
    assert "h#branch" not in original.dag  # the input graph is not modified
    assert sorted(once.dag.nodes) == sorted(twice.dag.nodes)
    assert sorted(once.dag.edges(data=True), key=str) == sorted(twice.dag.edges(data=True), key=str)


def test_same_value_twice_into_one_node_gets_a_branch():
    g = Graph("square")
    g.add_input("x", Spec((None, 2), np.float32))
    g.add_op("cat", Concat(axis=1), num_inputs=2)
    g.connect("x", 0, "cat", 0)
    g.connect("x", 0, "cat", 1)
    g.outputs = ["cat"]
    g = prepare(g)
    assert g.input_sources("cat") == [("x#branch", 0), ("x#branch", 1)]
    assert g.specs("cat")[0] == Spec((None, 4), np.float32)


def test_shapes_are_inferred_with_symbolic_batch():
    g = prepare(tied_graph())
    assert g.specs("m") == (Spec((None, 6), np.float32),)


def test_validate_reports_missing_and_doubly_connected_ports():
    g = Graph("bad")
    g.add_input("x", Spec((None, 3), np.float32))
    g.add_op("a", Dense())
    g.connect("x", 0, "a", 0)
    g.connect("x", 0, "a", 0)
    g.outputs = ["a", "nope"]
    with pytest.raises(GraphError) as info:
        validate(g)
    messages = [d.message for d in info.value.diagnostics]
    assert any("input 'x' of 'a' is connected 2 times" in m for m in messages)
    assert any("missing its input 'W'" in m for m in messages)
    assert any("unknown value 'nope'" in m for m in messages)


def test_validate_reports_cycles_with_their_nodes():
    g = Graph("cycle")
    g.add_op("a", Relu())
    g.add_op("b", Relu())
    g.connect("a", 0, "b", 0)
    g.connect("b", 0, "a", 0)
    with pytest.raises(GraphError, match="cycle: a -> b -> a"):
        validate(g)


def test_shape_errors_name_the_node_and_its_input_shapes():
    g = tied_graph()
    g.set_value("W", np.ones((4, 3), np.float32))
    with pytest.raises(GraphError) as info:
        infer_shapes(insert_branches(g))
    nodes = sorted(d.node for d in info.value.diagnostics)
    assert nodes == ["a", "b"]
    assert "x has 3 features but W expects 4" in str(info.value)


def test_prepare_marks_its_result_and_leaves_a_prepared_graph_alone():
    original = tied_graph()
    g = prepare(original)
    assert g.prepared and not original.prepared
    assert prepare(g) is g
    assert g.copy().prepared


def test_a_leaf_of_another_shape_or_a_new_node_unprepares_the_graph():
    g = prepare(tied_graph())
    g.set_value("W", np.full((3, 3), 2.0, np.float32))     # same spec: shapes still hold
    assert g.prepared
    g.set_value("W", np.ones((4, 3), np.float32))
    assert not g.prepared
    g = prepare(tied_graph())
    g.add_input("z", Spec((None, 3), np.float32))
    assert not g.prepared and prepare(g).prepared


def test_make_const_turns_a_param_into_a_constant_of_the_given_array():
    g = prepare(tied_graph())
    value = np.zeros((3, 3), np.float32)
    g.make_const("W", value)
    assert g.is_const("W") and g.value_of("W") is value and not g.is_trainable("W")
    assert g.prepared and "W" not in g.params


def test_port_names_number_a_variadic_ops_positions():
    g = tied_graph()
    assert g.port_names("m") == ("xs", "xs")
    assert g.port_names("m", indexed=True) == ("xs[0]", "xs[1]")
    assert g.port_names("a", indexed=True) == ("x", "W", "b")
