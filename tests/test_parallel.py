"""flowgrad.parallel: every item once, errors raised, no waiting on a helper that is not
running, BLAS threads restored, and the thread count's validation."""
import threading

import numpy as np
import pytest

from flowgrad import parallel
from flowgrad.errors import FlowgradError


@pytest.fixture
def threads():
    """Set the thread count for a test, and restore the environment's afterwards."""
    def use(n):
        parallel.set_num_threads(n)
    yield use
    parallel.set_num_threads(None)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 64])
def test_every_item_runs_once(threads, n_threads, count):
    threads(n_threads)
    seen = []
    lock = threading.Lock()

    def item(i):
        with lock:
            seen.append(i)
    parallel.run(item, count)
    assert sorted(seen) == list(range(count))


def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 40, 50)).astype(np.float32)
    b = rng.standard_normal((50, 30)).astype(np.float32)
    outs = []
    for n in (1, 2, 4):
        threads(n)
        out = np.empty((16, 40, 30), np.float32)

        def item(i):
            np.matmul(a[i], b, out=out[i])
        parallel.run(item, len(a))
        outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_an_item_error_is_raised_after_the_started_items_finish(threads):
    threads(2)
    finished = []

    def item(i):
        if i == 3:
            raise ValueError("item 3 failed")
        finished.append(i)
    with pytest.raises(ValueError, match="item 3 failed"):
        parallel.run(item, 8)
    # the pool is still usable afterwards
    seen = []
    parallel.run(seen.append, 5)
    assert sorted(seen) == list(range(5))


def test_the_caller_does_not_wait_for_a_helper_that_is_not_running(threads):
    """A helper stuck in its item (as if the OS did not schedule it) holds only that item:
    the caller runs every other one.  (With work split up front, half the items would wait
    for the stuck thread and this test would time out.)"""
    threads(2)
    release = threading.Event()
    callers = []
    stuck = []

    def item(i):
        if threading.current_thread() is not threading.main_thread() and not stuck:
            stuck.append(i)
            assert release.wait(10), "the caller never finished the other items"
            return
        callers.append(i)
        if len(callers) == 15:             # every item but the stuck one: let it go
            release.set()
    parallel.run(item, 16)
    if not stuck:       # the helper never woke up in time: the caller ran everything
        assert sorted(callers) == list(range(16))
    else:
        assert sorted(callers + stuck) == list(range(16)) and len(callers) == 15


def test_nested_runs_are_inline(threads):
    threads(2)
    seen = []
    lock = threading.Lock()

    def inner(i):
        with lock:
            seen.append(i)

    def outer(i):
        parallel.run(lambda j: inner(10 * i + j), 3)
    parallel.run(outer, 4)
    assert sorted(seen) == sorted(10 * i + j for i in range(4) for j in range(3))


def test_blas_threads_are_restored(threads):
    import threadpoolctl
    threads(2)
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
              if lib["user_api"] == "blas"]
    inside = []

    def item(i):
        if i == 0:
            inside.extend(lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                          if lib["user_api"] == "blas")
    parallel.run(item, 4)
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
             if lib["user_api"] == "blas"]
    assert after == before
    assert all(n == 1 for n in inside)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_refuses_nonsense(bad):
    with pytest.raises(FlowgradError, match="whole number >= 1"):
        parallel.set_num_threads(bad)


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bad_environment_variable_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("FLOWGRAD_NUM_THREADS", value)
    with pytest.raises(FlowgradError, match="FLOWGRAD_NUM_THREADS"):
        parallel.get_num_threads()


def test_the_environment_variable_sets_the_count(monkeypatch):
    monkeypatch.setenv("FLOWGRAD_NUM_THREADS", "3")
    assert parallel.get_num_threads() == 3


def test_a_large_activation_is_shared_out_with_the_same_bits(threads):
    """An elementwise kernel over more than two pieces runs piece by piece across threads;
    every element is the one a single call gives."""
    from flowgrad.backend import DEFAULT
    from flowgrad.ops.activations import PIECE_ELEMENTS, _pointwise
    x = np.random.default_rng(1).standard_normal(2 * PIECE_ELEMENTS + 12345).astype(np.float32)
    whole = np.empty_like(x)
    DEFAULT.kernels.gelu(x, whole)
    for n in (1, 2, 3):
        threads(n)
        assert np.array_equal(_pointwise(DEFAULT, DEFAULT.kernels.gelu, np.float32, (x,)), whole)


def test_the_command_line_sets_the_count_for_its_run_only(capsys):
    from flowgrad.cli import main
    before = parallel.get_num_threads()
    seen = []
    real = parallel.set_num_threads

    def spy(n):
        seen.append(n)
        real(n)
    parallel.set_num_threads = spy
    try:
        assert main(["--threads", "3", "ops"]) == 0
    finally:
        parallel.set_num_threads = real
    assert seen[0] == 3 and parallel.get_num_threads() == before
    assert main(["--threads", "0", "ops"]) == 1
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


def test_a_plan_runs_with_blas_on_one_thread(monkeypatch):
    """Inside a plan's forward and backward BLAS has one thread (every thread of the run is
    flowgrad's own); the count the process had is back afterwards."""
    import threadpoolctl
    import flowgrad
    from flowgrad.plan import plan as plan_module

    def blas_counts():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]
    seen = []
    for name in ("run_forward", "run_backward"):
        real = getattr(plan_module, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(blas_counts())
            return _real(*args, **kwargs)
        monkeypatch.setattr(plan_module, name, spy)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_counts()
        plan = flowgrad.compile(flowgrad.load("graphs/logistic_reg.yaml"))
        plan.forward({"x": np.ones(4, np.float32), "t": np.zeros(4, np.float32)})
        plan.backward({"L_reg": 1.0})
        assert blas_counts() == before
    assert len(seen) == 2 and all(n == 1 for counts in seen for n in counts)


def test_the_command_line_reports_a_bad_environment_variable_first(monkeypatch, capsys):
    from flowgrad.cli import main
    parallel.set_num_threads(2)
    parallel.run(lambda i: None, 4)             # a pool exists: the clean-up must not fail
    parallel.set_num_threads(None)
    parallel.run(lambda i: None, 4)
    monkeypatch.setenv("FLOWGRAD_NUM_THREADS", "zero")
    assert main(["ops"]) == 1
    assert "FLOWGRAD_NUM_THREADS must be a whole number >= 1, got 'zero'" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(256, 64, 3136), (512, 1152, 49), (40, 30, 50), (3, 4096, 4096)])
def test_a_product_is_shared_out_with_the_same_bits(threads, shape):
    """backend.product cuts a large product by its shape alone: the same bits at any count."""
    from flowgrad.backend import DEFAULT, PRODUCT_SPLIT, product_pieces
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    outs = []
    for count in (1, 2, 3):
        threads(count)
        out = np.full((m, n), np.nan, np.float32)
        with parallel.blas_single():
            assert DEFAULT.product(a, b, out) is out
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    np.testing.assert_allclose(outs[0], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    pieces = product_pieces(m, k, n)
    covered = np.zeros(max(m, n), int)
    for axis, start, stop in pieces:
        assert axis == ("rows" if m >= n else "cols") or len(pieces) == 1
        covered[start:stop] += 1
    assert (covered[:m if pieces[0][0] == "rows" else n] == 1).all()
    assert (len(pieces) > 1) == (m * k * n >= 2 * PRODUCT_SPLIT and max(m, n) >= 32)


@pytest.mark.parametrize("shape,route", [
    ((3, 512, 512), "rows"), ((2, 300, 100), "rows"), ((2, 8192, 2), "rows"),
    ((3, 4096, 4096), "rows"), ((128, 387, 3), "columns"), ((200, 100, 2), "columns"),
    ((4, 512, 512), "one"), ((32, 288, 3), "one"), ((1, 300, 100), "one"), ((100, 300, 1), "one")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_product_2_or_3_wide_is_computed_as_matrix_vector_products(threads, shape, route,
                                                                     dtype):
    """backend.product computes an output of 2 or 3 rows (columns) as that many
    matrix-vector products when the long operand is large (OpenBLAS's matrix product is up to
    2x slower there); otherwise one matrix product (numpy's own vector products for 1 wide).
    numpy's bits for that route at any thread count (they differ between the routes for most
    elements of these shapes), and the product's value."""
    from flowgrad.backend import DEFAULT
    m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    with parallel.blas_single():
        expected = {"rows": lambda: np.stack([a[i] @ b for i in range(m)]),
                    "columns": lambda: np.stack([a @ b[:, j] for j in range(n)], axis=1),
                    "one": lambda: a @ b}[route]()
        for count in (1, 2):
            threads(count)
            out = np.full((m, n), np.nan, dtype)
            assert DEFAULT.product(a, b, out) is out
            np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel", [1, 3])
def test_a_batch_1_convolution_shares_its_product_with_the_same_bits(threads, monkeypatch,
                                                                    kernel):
    """At batch 1 a conv has no batch chunks: its product is what the threads share."""
    from flowgrad import backend
    from flowgrad.op import Context
    from flowgrad.ops.conv import Conv
    pieces = []
    product = backend.product_pieces
    monkeypatch.setattr(backend, "product_pieces", lambda *a: (pieces.append(product(*a)),
                                                              pieces[-1])[1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 48, 48)).astype(np.float32)
    W = rng.standard_normal((128, 64, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    op = Conv(pads=[kernel // 2] * 4)
    outs = []
    for count in (1, 2, 3):
        threads(count)
        with parallel.blas_single():
            (y,) = op.forward(Context(grad_enabled=False), x, W, b)
        outs.append(y)
    assert pieces and all(len(p) == 2 for p in pieces)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("op_type,groups,channels", [
    ("conv", 1, 1), ("conv", 1, 3), ("conv", 8, 8), ("max_pool", 1, 16)])
def test_kernels_of_one_image_at_a_time_cut_the_batch_for_the_threads_with_the_same_bits(
        threads, monkeypatch, op_type, groups, channels):
    """The direct convolution kernels (a first layer, a depthwise conv) and max pooling
    compute each image alone (``CPUBackend.batch``): with several threads the batch is cut
    into parts the threads share, with one thread it is one call, and the bits are the same."""
    from flowgrad.op import Context
    from flowgrad.ops.conv import Conv
    from flowgrad.ops.pool import MaxPool
    counts = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda item, count: (counts.append(count),
                                                              real(item, count))[1])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24 if op_type == "conv" else 64, channels, 28, 28)
                            ).astype(np.float32)
    x[0, 0, :2, :2] = [[np.nan, 1.0], [-0.0, 0.0]]
    if op_type == "conv":
        W = rng.standard_normal((16 if groups == 1 else 8, channels // groups, 5, 5)
                                ).astype(np.float32)
        b = rng.standard_normal(W.shape[0]).astype(np.float32)
        op, inputs = Conv(pads=[2] * 4, group=groups), (x, W, b)
    else:
        op, inputs = MaxPool(kernel_shape=[2, 2], strides=[2, 2]), (x,)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        counts.clear()
        for grad in (False, True):      # (with gradient, max pooling keeps its arg-max too)
            (y,) = op.forward(Context(grad_enabled=grad), *inputs)[:1]
            outs.append(y)
        assert (max(counts, default=1) > 1) == (n > 1), (n, counts)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("n,work", [(64, 1000), (64, 5000), (1000, 130), (3, 10 ** 6), (1, 10 ** 9),
                                    (64, 10)])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_batch_is_cut_into_a_whole_number_of_parts_per_thread(threads, n, work, count):
    """backend.batch covers the batch once, in order; with threads, none of its parts is
    under BATCH_PART_NS of work unless the batch is, and their number is a multiple of the
    thread count (else one thread computes a part more while the others wait) or the batch."""
    from flowgrad.backend import BATCH_PART_NS, DEFAULT
    threads(count)
    seen = []
    lock = threading.Lock()

    def part(start, stop):
        with lock:
            seen.append((start, stop))
    DEFAULT.batch(n, work, part)
    seen.sort()
    assert [a for a, _ in seen] == [0] + [b for _, b in seen[:-1]] and seen[-1][1] == n
    if count == 1 or n == 1 or n * work < 2 * BATCH_PART_NS:
        assert seen == [(0, n)]
    else:
        assert len(seen) > 1 and (len(seen) % count == 0 or len(seen) == n)
        assert all((b - a) * work >= BATCH_PART_NS // 2 for a, b in seen)


@pytest.mark.parametrize("op_type", ["softmax", "log_softmax", "layer_norm"])
def test_row_kernels_share_their_rows_among_threads_with_the_same_bits(threads, monkeypatch,
                                                                       op_type):
    """softmax, log-softmax (forward and backward) and layer norm's forward compute each row
    alone: a large input's rows are cut into ranges the threads share (an attention's
    probabilities, 0.5 ms on one core), one call with one thread, the same bits either way."""
    from flowgrad.op import Context
    from flowgrad.ops.activations import LogSoftmax, Softmax
    from flowgrad.ops.norm import LayerNorm
    counts = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda item, count: (counts.append(count),
                                                              real(item, count))[1])
    rng = np.random.default_rng(2)
    x = (3 * rng.standard_normal((8, 4, 64, 64))).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, np.inf, -0.0]
    gy = rng.standard_normal(x.shape).astype(np.float32)
    if op_type == "layer_norm":
        scale = rng.standard_normal(64).astype(np.float32)
        op, inputs = LayerNorm(axis=-1), (x, scale, rng.standard_normal(64).astype(np.float32))
    else:
        op, inputs = (Softmax() if op_type == "softmax" else LogSoftmax()), (x,)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        counts.clear()
        ctx = Context(grad_enabled=True)
        (y,) = op.forward(ctx, *inputs)
        outs.append(y)
        if op_type != "layer_norm":         # (its backward sums over rows: one call)
            outs.append(op.backward(ctx, gy)[0])
        assert (max(counts, default=1) > 1) == (n > 1), (n, counts)
    per_count = len(outs) // 3
    for i in range(per_count, len(outs)):
        np.testing.assert_array_equal(outs[i], outs[i % per_count])


def test_a_dense_layer_shares_its_products_with_the_same_bits(threads, monkeypatch):
    """dense's forward and backward products go through the backend's (a transformer's
    projections, which BLAS — one thread in a plan's run — would compute on one core): large
    ones are cut into pieces the threads share, fixed by the shapes, so the bits are those of
    any thread count."""
    from flowgrad import backend
    from flowgrad.op import Context
    from flowgrad.ops.dense import Dense
    pieces = []
    real = backend.product_pieces
    monkeypatch.setattr(backend, "product_pieces", lambda *a: (pieces.append(real(*a)),
                                                              pieces[-1])[1])
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 64, 128)).astype(np.float32)
    W = rng.standard_normal((128, 512)).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    gy = rng.standard_normal((16, 64, 512)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        threads(n)
        ctx = Context(grad_enabled=True)
        ctx.needs_input_grad = (True, True, True)
        with parallel.blas_single():
            (y,) = Dense().forward(ctx, x, W, b)
            results.append((y,) + tuple(Dense().backward(ctx, gy)))
    assert len(pieces) == 9 and all(len(p) == 2 for p in pieces)   # y, gx, gW at each count
    for got in results[1:]:
        for a, e in zip(got, results[0]):
            np.testing.assert_array_equal(a, e)
    np.testing.assert_allclose(results[0][0], x @ W + b, rtol=1e-5, atol=1e-4)


def test_a_batch_of_products_is_shared_out_with_numpys_bits(threads, monkeypatch):
    """matmul on stacks of matrices (attention's scores and context, on transposed views):
    the threads share parts of the first axis, each matrix computed alone — numpy's bits."""
    from flowgrad.op import Context
    from flowgrad.ops.dense import MatMul
    counts = []
    real = parallel.run
    monkeypatch.setattr(parallel, "run", lambda item, count: (counts.append(count),
                                                              real(item, count))[1])
    rng = np.random.default_rng(3)
    q = rng.standard_normal((16, 128, 4, 32)).astype(np.float32).transpose(0, 2, 1, 3)
    k = rng.standard_normal((16, 128, 4, 32)).astype(np.float32).transpose(0, 2, 3, 1)
    with parallel.blas_single():        # (as in a plan's run: BLAS's own threads cut too)
        expected = q @ k
        for n in (1, 2, 3):
            threads(n)
            counts.clear()
            (y,) = MatMul().forward(Context(grad_enabled=False), q, k)
            np.testing.assert_array_equal(y, expected)
            assert (max(counts, default=1) > 1) == (n > 1)
