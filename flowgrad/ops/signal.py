"""Signal processing with ONNX semantics: the discrete Fourier transform (``dft``), the
short-time Fourier transform (``stft``), the Hann, Hamming and Blackman windows (``window``)
and the mel filter bank (``mel_weight_matrix``).

Complex numbers travel as ONNX stores them, a trailing axis of 2 (real, imaginary); a trailing
axis of 1 is a real signal.  ``dft`` and ``stft`` are real-linear in their signal, so their
backward is the adjoint transform, computed with the FFT too: for a complex-linear map
``w = A z`` the gradient is ``Aᴴ g`` (the forward DFT's adjoint is ``n · ifft``, the inverse
DFT's ``fft / n``), with zero-padding and cropping transposed into each other.  The one-sided
inverse (ONNX's irfft) is only real-linear — it reads the real part of the first and Nyquist
bins — and its adjoint is ``rfft`` weighted by 1 on those bins and 2 on the others, over n.
The windows and the filter bank depend on attributes only: they are forward-only constants
(the ONNX importer folds them).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape

_FLOATS = ("float16", "float32", "float64")


def _complex(x: np.ndarray) -> np.ndarray:
    """The signal held by ``x`` (..., 1 | 2) as a real or complex array without that axis."""
    return x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]


def _packed(z: np.ndarray, dtype, real: bool = False) -> np.ndarray:
    """``z`` in ONNX's layout: (..., 2) real and imaginary parts, or (..., 1) when ``real``."""
    if real:
        return np.real(z)[..., None].astype(dtype)
    return np.stack([np.real(z), np.imag(z)], axis=-1).astype(dtype)


def _fit(z: np.ndarray, length: int, axis: int) -> np.ndarray:
    """``z`` cropped or zero-padded to ``length`` along ``axis`` (numpy's FFT ``n=``)."""
    have = z.shape[axis]
    if have >= length:
        return np.take(z, np.arange(length), axis=axis)
    pad = [(0, 0)] * z.ndim
    pad[axis] = (0, length - have)
    return np.pad(z, pad)


def dft_length(op, n_in: int) -> int:
    """The transform length: ``length``, else the signal's (2·(n−1) for a one-sided inverse)."""
    if op.length is not None:
        return op.length
    return 2 * (n_in - 1) if op.inverse and op.onesided else n_in


def transform(z: np.ndarray, axis: int, n: int, inverse: bool, onesided: bool) -> np.ndarray:
    """The DFT of ``z`` along ``axis`` as ONNX's DFT computes it (complex result, real for a
    one-sided inverse)."""
    if inverse:
        return np.fft.irfft(z, n=n, axis=axis) if onesided else np.fft.ifft(z, n=n, axis=axis)
    y = np.fft.fft(z, n=n, axis=axis)
    return np.take(y, np.arange(n // 2 + 1), axis=axis) if onesided else y


def adjoint(g: np.ndarray, axis: int, n: int, n_in: int, inverse: bool,
            onesided: bool) -> np.ndarray:
    """The gradient of :func:`transform` w.r.t. its input of length ``n_in`` along ``axis``,
    given the output gradient ``g`` (complex, or real for the one-sided inverse)."""
    if inverse and onesided:
        r = np.fft.rfft(g, n=n, axis=axis)
        weight = np.full(r.shape[axis], 2.0)
        weight[0] = 1.0
        if n % 2 == 0:
            weight[-1] = 1.0
        shape = [1] * r.ndim
        shape[axis] = -1
        return _fit(r * (weight / n).reshape(shape), n_in, axis)
    if inverse:
        return _fit(np.fft.fft(g, n=n, axis=axis) / n, n_in, axis)
    if onesided:
        g = _fit(g, n, axis)                    # the dropped bins get no gradient
    return _fit(np.fft.ifft(g, n=n, axis=axis) * n, n_in, axis)


class Dft(Op):
    """The discrete Fourier transform along ``axis`` (ONNX DFT).

    Input (..., 1) real or (..., 2) complex; ``axis`` counts the input's axes (the batch is 0,
    negative from the end; never the last, which holds the real and imaginary parts).
    ``length`` crops or zero-pads the signal (default: its own length).  ``onesided`` keeps
    the n//2 + 1 non-redundant bins of a forward transform; with ``inverse`` it is the inverse
    of that (irfft: real output (..., 1), default length 2·(n−1)).  ``inverse`` divides by n.
    Differentiable (linear; see the module docstring).
    """

    type = "dft"
    attrs = {"axis": Attr("int", -2, doc="the signal's axis (not the last)"),
             "length": Attr("int", None, doc="transform length (default: the signal's)"),
             "inverse": Attr("bool", False, doc="the inverse transform (divided by n)"),
             "onesided": Attr("bool", False, doc="only the n//2 + 1 non-redundant bins")}

    def check(self):
        if self.length is not None and self.length < 1:
            raise AttrError(f"dft: length must be >= 1, got {self.length}", attr="length")

    def _axis(self, ndim: int) -> int:
        if ndim < 2 or not -ndim <= self.axis < ndim or self.axis % ndim == ndim - 1:
            raise ShapeError(f"dft: axis {self.axis} is not a signal axis of a {ndim}-d input "
                             f"(valid: {-ndim} to -2 and 0 to {ndim - 2}; the last axis holds "
                             "real and imaginary parts)")
        return self.axis % ndim

    def infer(self, x):
        axis = self._axis(x.ndim)
        if x.shape[-1] not in (None, 1, 2):
            raise ShapeError(f"dft: the last axis must be 1 (real) or 2 (complex), got "
                             f"{format_shape(x.shape)}")
        if x.dtype.kind != "f":
            raise ShapeError(f"dft: the input must be a float tensor, not {x.dtype}")
        n_in = x.shape[axis]
        n = None if n_in is None and self.length is None else dft_length(self, n_in or 0)
        out = n // 2 + 1 if n is not None and self.onesided and not self.inverse else n
        shape = list(x.shape[:-1]) + [1 if self.inverse and self.onesided else 2]
        shape[axis] = out
        return (Spec(tuple(shape), x.dtype),)

    def forward(self, ctx, x):
        axis = self._axis(x.ndim)
        n_in = x.shape[axis]
        n = dft_length(self, n_in)
        if n < 1:
            raise ShapeError(f"dft: the transform length is {n}; give a longer signal or set "
                             "length")
        y = transform(_complex(x), axis, n, self.inverse, self.onesided)
        ctx.save(x.shape, axis, n, n_in)
        return (_packed(y, x.dtype, real=self.inverse and self.onesided),)

    def backward(self, ctx, gy):
        shape, axis, n, n_in = ctx.saved
        g = gy[..., 0] if self.inverse and self.onesided else _complex(gy)
        gz = adjoint(g, axis, n, n_in, self.inverse, self.onesided)
        return (_packed(gz, gy.dtype, real=shape[-1] == 1),)


class Stft(Op):
    """The short-time Fourier transform (ONNX STFT): frames of ``frame_length`` samples every
    ``frame_step``, each multiplied by ``window`` and transformed.

    ``signal`` is (batch, length, 1 | 2); the output (batch, frames, bins, 2) with
    ``frames = 1 + (length − frame_length) // frame_step`` and ``bins`` frame_length//2 + 1
    when ``onesided`` (the default), else frame_length.  ``frame_length`` defaults to the
    window's length (the signal's without a window); no window is a window of ones.  Frames are
    gathered with one fancy index; backward transforms the gradient back (the adjoint DFT),
    multiplies by the window and overlap-adds into the signal (``np.add.at``); the window's
    gradient sums frame times transformed gradient over batch and frames.
    """

    type = "stft"
    inputs = ("signal", "window?")
    attrs = {"frame_step": Attr("int", doc="samples between frame starts"),
             "frame_length": Attr("int", None, doc="samples per frame (default: the window's)"),
             "onesided": Attr("bool", True, doc="only the frame_length//2 + 1 bins")}

    def check(self):
        if self.frame_step < 1:
            raise AttrError(f"stft: frame_step must be >= 1, got {self.frame_step}",
                            attr="frame_step")
        if self.frame_length is not None and self.frame_length < 1:
            raise AttrError(f"stft: frame_length must be >= 1, got {self.frame_length}",
                            attr="frame_length")

    def _frame_length(self, length, window_length):
        if self.frame_length is not None:
            if window_length is not None and window_length != self.frame_length:
                raise ShapeError(f"stft: the window has {window_length} samples but "
                                 f"frame_length is {self.frame_length}; they must agree")
            return self.frame_length
        return window_length if window_length is not None else length

    def infer(self, signal, window):
        if signal.ndim != 3 or signal.shape[-1] not in (None, 1, 2):
            raise ShapeError(f"stft: signal must be (batch, length, 1 | 2), got "
                             f"{format_shape(signal.shape)}")
        if window is not None and window.ndim != 1:
            raise ShapeError(f"stft: window must be 1-d, got {format_shape(window.shape)}")
        if window is not None and window.shape[0] is None and self.frame_length is None:
            fl = None                           # the window's length is known at run time
        else:
            fl = self._frame_length(signal.shape[1],
                                    None if window is None else window.shape[0])
        frames = None
        if fl is not None and signal.shape[1] is not None:
            if fl > signal.shape[1]:
                raise ShapeError(f"stft: frames of {fl} samples do not fit a signal of "
                                 f"{signal.shape[1]}")
            frames = 1 + (signal.shape[1] - fl) // self.frame_step
        bins = None if fl is None else (fl // 2 + 1 if self.onesided else fl)
        return (Spec((signal.shape[0], frames, bins, 2), signal.dtype),)

    def forward(self, ctx, signal, window):
        length = signal.shape[1]
        fl = self._frame_length(length, None if window is None else window.shape[0])
        if fl > length:
            raise ShapeError(f"stft: frames of {fl} samples do not fit a signal of {length}")
        frames = 1 + (length - fl) // self.frame_step
        index = self.frame_step * np.arange(frames)[:, None] + np.arange(fl)   # (F, fl)
        z = _complex(signal)[:, index]                                          # (B, F, fl)
        w = np.ones(fl, signal.dtype) if window is None else np.asarray(window)
        y = transform(z * w, 2, fl, False, self.onesided)
        ctx.save(signal.shape, index, z, w, fl, window is not None)
        return (_packed(y, signal.dtype),)

    def backward(self, ctx, gy):
        shape, index, z, w, fl, has_window = ctx.saved
        need_signal, need_window = ctx.needs_input_grad
        gz = adjoint(_complex(gy), 2, fl, fl, False, self.onesided)   # d loss / d framed signal
        g_signal = g_window = None
        if need_signal:
            acc = np.zeros(shape[:2], complex if shape[-1] == 2 else float)
            np.add.at(acc, (slice(None), index), gz * w if shape[-1] == 2 else np.real(gz) * w)
            g_signal = _packed(acc, gy.dtype, real=shape[-1] == 1)
        if need_window and has_window:
            g_window = np.real(np.conj(gz) * z).sum(axis=(0, 1)).astype(w.dtype)
        return g_signal, g_window


# -- windows and the mel filter bank (constants) ---------------------------------------------------

class Window(Op):
    """A Hann, Hamming or Blackman window of ``size`` samples (ONNX HannWindow, HammingWindow,
    BlackmanWindow).  ``periodic`` (the default) makes it one period of a window of size + 1,
    as spectral analysis wants; otherwise it is symmetric.  Forward-only: no inputs."""

    type = "window"
    inputs = ()
    attrs = {"kind": Attr("str", choices=("hann", "hamming", "blackman"), doc="the window"),
             "size": Attr("int", doc="samples"),
             "periodic": Attr("bool", True, doc="periodic (true) or symmetric"),
             "dtype": Attr("str", "float32", choices=_FLOATS + ("int8", "int16", "int32",
                                                                "int64", "uint8", "uint16",
                                                                "uint32", "uint64"),
                           doc="output dtype")}
    differentiable = False

    def check(self):
        if self.size < 0:
            raise AttrError(f"window: size must be >= 0, got {self.size}", attr="size")

    def infer(self):
        return (Spec((self.size,), np.dtype(self.dtype)),)

    def forward(self, ctx):
        period = self.size if self.periodic else self.size - 1
        phase = 2 * np.pi * np.arange(self.size) / period if period > 0 else \
            np.zeros(self.size)
        if self.kind == "hann":
            w = 0.5 - 0.5 * np.cos(phase)
        elif self.kind == "hamming":
            alpha = 25 / 46
            w = alpha - (1 - alpha) * np.cos(phase)
        else:
            w = 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase)
        return (w.astype(self.dtype),)


class MelWeightMatrix(Op):
    """The (dft_length//2 + 1, num_mel_bins) matrix mapping a one-sided spectrum to mel bands
    (ONNX MelWeightMatrix): triangles between num_mel_bins + 2 edges spaced evenly on the mel
    scale (mel = 2595·log10(1 + f/700)) from ``lower_edge_hertz`` to ``upper_edge_hertz``,
    rounded down to spectrum bins, each rising from 0 at its left edge to 1 at its centre and
    back to 0 at its right edge.  As ONNX's reference, the mel step is the range divided by
    num_mel_bins + 2.  Forward-only: no inputs."""

    type = "mel_weight_matrix"
    inputs = ()
    attrs = {"num_mel_bins": Attr("int", doc="mel bands (columns)"),
             "dft_length": Attr("int", doc="length of the DFT the spectrum came from"),
             "sample_rate": Attr("int", doc="samples per second"),
             "lower_edge_hertz": Attr("float", doc="lowest frequency"),
             "upper_edge_hertz": Attr("float", doc="highest frequency"),
             "dtype": Attr("str", "float32", choices=_FLOATS, doc="output dtype")}
    differentiable = False

    def check(self):
        for name in ("num_mel_bins", "dft_length", "sample_rate"):
            if getattr(self, name) < 1:
                raise AttrError(f"mel_weight_matrix: {name} must be >= 1, got "
                                f"{getattr(self, name)}", attr=name)
        if not 0 <= self.lower_edge_hertz < self.upper_edge_hertz:
            raise AttrError("mel_weight_matrix: needs 0 <= lower_edge_hertz < "
                            f"upper_edge_hertz, got {self.lower_edge_hertz} and "
                            f"{self.upper_edge_hertz}", attr="upper_edge_hertz")

    def infer(self):
        return (Spec((self.dft_length // 2 + 1, self.num_mel_bins), np.dtype(self.dtype)),)

    def forward(self, ctx):
        bins = self.dft_length // 2 + 1
        to_mel = lambda f: 2595 * np.log1p(f / 700) / math.log(10)      # noqa: E731
        low, high = to_mel(self.lower_edge_hertz), to_mel(self.upper_edge_hertz)
        mels = np.arange(self.num_mel_bins + 2) * ((high - low) / (self.num_mel_bins + 2)) + low
        hertz = 700 * np.expm1(mels / 2595 * math.log(10))
        edges = (((self.dft_length + 1) * hertz) // self.sample_rate).astype(np.int64)
        left, centre, right = edges[:-2], edges[1:-1], edges[2:]
        if edges.max() >= bins:
            raise ShapeError(f"mel_weight_matrix: upper_edge_hertz {self.upper_edge_hertz} "
                             f"lies beyond the spectrum's {bins} bins at sample_rate "
                             f"{self.sample_rate}")
        j = np.arange(bins)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            rising = np.where(centre > left, (j - left) / (centre - left), (j == centre) * 1.0)
            falling = (right - j) / (right - centre)
        out = np.where((j >= left) & (j <= centre), rising, 0.0)
        out = np.where((j >= centre) & (j < right) & (right > centre), falling, out)
        return (out.astype(self.dtype),)
