"""How a kernel is declared, compiled and cached: numba's JIT behind a pair of implementations.

Every kernel (:func:`kernel`) pairs a plain numpy *reference* (the specification, readable and
obviously right) and a *source* written as explicit loops that numba compiles.  Both take the
same arguments and write the same outputs; the tests compare them over grids of shapes.

* **Lazy.** numba compiles a kernel for a type signature the first time it is called with it, so
  a process pays only for the kernels it runs.
* **Cached on disk, never in the package.**  Compiled code goes to ``$FLOWGRAD_CACHE_DIR`` or
  else ``$XDG_CACHE_HOME/flowgrad/kernels`` (``~/.cache/flowgrad/kernels``), in a folder per
  version of the kernel sources (:func:`cache_dir`), so a second process starts warm and a
  read-only install works.  If no
  cache directory can be written, kernels still run (compiled once per process).  The cache
  does not depend on where the package lies (:class:`_PackageLocator`): a second checkout or
  clone of the same sources starts warm too.
* **Switchable.** ``FLOWGRAD_KERNELS=numpy`` runs every reference instead (for debugging, or
  where numba is missing: then flowgrad warns once and falls back by itself).
* **IEEE arithmetic.**  ``error_model="numpy"``: a division by zero gives inf or nan, as numpy's
  does, instead of raising (and the loops vectorise without a divisor check).
* **Deterministic.**  Kernels run serially (``nogil``, no ``fastmath``, no parallel reductions):
  the same inputs give the same bits, run after run, which training's resume relies on.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from typing import Any, Callable

#: every declared kernel by name (the tests check that each one is compared to its reference)
REGISTRY: dict[str, Callable] = {}


def cache_dir() -> str:
    """Where compiled kernels are kept (see the module doc), one folder per version of the
    kernels' sources.

    numba checks a cached kernel against its own source file only, while kernels inline
    helpers from other files of this package: after an upgrade that changed only a helper, a
    cache keyed by file alone would serve the old machine code.  The folder is named after a
    digest of every kernel source, so any change starts a fresh cache.
    """
    explicit = os.environ.get("FLOWGRAD_CACHE_DIR")
    if explicit:
        root = explicit
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                  ".cache")
        root = os.path.join(base, "flowgrad", "kernels")
    return os.path.join(root, _sources_digest())


def _sources_digest() -> str:
    digest = hashlib.sha256()
    folder = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def _mode() -> str:
    mode = os.environ.get("FLOWGRAD_KERNELS", "numba").strip().lower() or "numba"
    if mode not in ("numba", "numpy"):
        warnings.warn(f"FLOWGRAD_KERNELS={mode!r} is not 'numba' or 'numpy'; using 'numba'",
                      stacklevel=3)
        mode = "numba"
    if mode == "numba":
        try:
            import numba  # noqa: F401
        except ImportError:
            warnings.warn("numba is not installed: flowgrad runs its numpy reference kernels "
                          "(slower); `pip install numba` to compile them", stacklevel=3)
            mode = "numpy"
    return mode


MODE = _mode()


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if MODE == "numba":
    from numba.core import caching as _caching

    class _PackageLocator(_caching.UserProvidedCacheLocator):
        """numba's locator for a cache folder of our choosing, minus the absolute path.

        numba files a function's cache under a digest of its source file's absolute folder,
        so a fresh clone of the same sources (a CI run, a second worktree) compiled every
        kernel again (about 145 s for the test suite).  Here the subfolder is the source's
        folder relative to the package (``kernels``), inside the folder of
        :func:`cache_dir`, which is already one per version of every kernel source.  What
        tells numba a cached entry is fresh stays content, not place: the stamp is a digest
        of the source file (so on every numba: older ones stamp the file's mtime, which a
        clone never matches), and numba's index key adds the function's bytecode, the numba
        version and the CPU.  Files outside the package are left to numba's locators.
        """

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _inside_package(py_file):
                return None
            return super().from_function(py_func, py_file)

        @classmethod
        def get_suitable_cache_subpath(cls, py_file):
            folder = os.path.dirname(os.path.abspath(py_file))
            return os.path.relpath(folder, _PACKAGE).replace(os.sep, "_")

        def get_source_stamp(self):
            return _file_digest(self._py_file)

    class _LockedCache(_caching.FunctionCache):
        """numba's on-disk cache of one function, read and written under a file lock.

        numba writes a function's index (signature -> data file) and then the data file,
        picking the data file's number from the index it just read.  Two processes saving
        two signatures of one function at once (pytest-xdist workers, Dask workers, two
        test runs) can both pick number 1: the index then names one signature's machine
        code for the other's, on disk for every later process.  Saving under an exclusive
        lock on the cache folder, and loading under a shared one, keeps each index and its
        data files consistent.  Where there is no ``fcntl`` (Windows) it is numba's cache.
        """

        def load_overload(self, sig, target_context):
            with _folder_lock(self._cache_path, exclusive=False):
                return super().load_overload(sig, target_context)

        def save_overload(self, sig, data):
            with _folder_lock(self._cache_path, exclusive=True):
                super().save_overload(sig, data)


@contextlib.contextmanager
def _folder_lock(folder: str, exclusive: bool):
    try:
        import fcntl
    except ImportError:             # Windows: numba's own (unlocked) behaviour
        yield
        return
    try:
        os.makedirs(folder, exist_ok=True)
        handle = open(os.path.join(folder, ".lock"), "a+b")
    except OSError:                 # an unwritable cache: numba saves nothing there anyway
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _inside_package(path: str) -> bool:
    path = os.path.abspath(path)
    return os.path.commonpath([path, _PACKAGE]) == _PACKAGE


_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)    # an edit while running is hashed again
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.sha256(f.read()).hexdigest()
    return _DIGESTS[key]


def jit(fn: Callable) -> Any:
    """Compile ``fn`` with numba (lazily, cached in :func:`cache_dir`); identity without numba.

    For helpers called from inside kernels as well as for kernels' sources.
    """
    if MODE != "numba":
        return fn
    import numba
    from numba.core import config
    # both read when the dispatcher picks its cache locator (at decoration), then restored:
    # other numba users in the process keep their own settings.  CACHE_LOCATOR_CLASSES is
    # numba's hook (NUMBA_CACHE_LOCATOR_CLASSES); a numba without it keeps its own locators
    # (a clone then starts cold, as before).
    saved = config.CACHE_DIR, getattr(config, "CACHE_LOCATOR_CLASSES", None)
    config.CACHE_DIR = cache_dir()
    if saved[1] is not None:
        config.CACHE_LOCATOR_CLASSES = f"{__name__}._PackageLocator,UserProvidedCacheLocator"
    try:
        dispatcher = numba.njit(nogil=True, error_model="numpy")(fn)
        if _cache_writable():
            # what ``cache=True`` does (Dispatcher.enable_caching), with the locked cache;
            # no locator can place it (a folder that cannot be made): runs uncached
            try:
                dispatcher._cache = _LockedCache(fn)
            except (RuntimeError, OSError):
                pass
        return dispatcher
    finally:
        config.CACHE_DIR = saved[0]
        if saved[1] is not None:
            config.CACHE_LOCATOR_CLASSES = saved[1]


_WRITABLE: bool | None = None


def _cache_writable() -> bool:
    global _WRITABLE
    if _WRITABLE is None:
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            _WRITABLE = os.access(cache_dir(), os.W_OK)
        except OSError:
            _WRITABLE = False
    return _WRITABLE


def kernel(reference: Callable) -> Callable[[Callable], Callable]:
    """Declare a kernel: decorate its loop source, naming the numpy reference it must match.

        def _relu_reference(x, out):
            np.maximum(x, 0, out=out)

        @kernel(_relu_reference)
        def relu(x, out):
            for i in range(x.size):
                out[i] = max(x[i], 0)

    The name then holds the implementation in use (``MODE``) itself — the numba dispatcher, with
    no wrapper in front of it: a kernel call costs what numba's own dispatch costs — carrying
    ``.reference`` (the numpy function), ``.compiled`` (the numba dispatcher) and ``.source``.
    """
    def declare(source: Callable) -> Callable:
        name = source.__name__
        if name in REGISTRY:
            raise ValueError(f"kernel {name!r} is declared twice")
        compiled = jit(source)
        if MODE == "numba":
            impl = compiled
        else:                   # a function of its own: references may serve two kernels
            def impl(*args):
                return reference(*args)
            impl.__name__ = impl.__qualname__ = name
        impl.reference, impl.compiled, impl.source = reference, compiled, source
        REGISTRY[name] = impl
        return impl
    return declare
