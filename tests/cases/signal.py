"""Cases for flowgrad/ops/signal.py: dft in every mode (real and complex input, axes, lengths
that crop and pad, one-sided, inverse, one-sided inverse), stft with and without a window, and
the forward-only windows and mel filter bank."""
from flowgrad.testing import Case

CASES = {
    "dft": [Case([(2, 6, 1)], id="real"),
            Case([(2, 5, 2)], {"axis": 1}, id="complex"),
            Case([(3, 4, 2)], {"axis": 0, "length": 6}, id="axis0-padded"),
            Case([(2, 7, 3, 1)], {"axis": 1, "length": 5, "onesided": True}, id="rfft-cropped"),
            Case([(2, 6, 1)], {"onesided": True}, id="rfft-even"),
            Case([(2, 5, 2)], {"inverse": True}, id="inverse"),
            Case([(2, 4, 2)], {"inverse": True, "onesided": True}, id="irfft-even"),
            Case([(2, 4, 2)], {"inverse": True, "onesided": True, "length": 7}, id="irfft-odd"),
            Case([(2, 5, 1)], {"inverse": True, "onesided": True, "length": 6},
                 id="irfft-real-in")],
    "stft": [Case([(2, 16, 1), (6,)], {"frame_step": 3}, id="real-window"),
             Case([(2, 12, 2), None], {"frame_step": 4, "frame_length": 5, "onesided": False},
                  id="complex-no-window"),
             Case([(1, 10, 1), (4,)], {"frame_step": 2, "onesided": False}, id="two-sided")],
    "window": [Case([], {"kind": "hann", "size": 8}),
               Case([], {"kind": "blackman", "size": 5, "periodic": False}, id="symmetric")],
    "mel_weight_matrix": [Case([], {"num_mel_bins": 8, "dft_length": 16, "sample_rate": 8192,
                                    "lower_edge_hertz": 0.0, "upper_edge_hertz": 4096.0})],
}
