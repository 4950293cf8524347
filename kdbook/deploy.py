"""Deployment: a model exported to ONNX, checked against PyTorch in onnxruntime.

:func:`export_onnx` writes the file with a dynamic batch axis; :func:`check_onnx` runs it in
onnxruntime on a random batch and compares logits and latency with the PyTorch model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdbook.evaluate import latency_ms, median_ms

ONNX_INPUT, ONNX_OUTPUT = "images", "logits"  # tensor names in exported ONNX files


def export_onnx(
    model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *, opset_version: int = 18
) -> Path:
    """Export ``model`` (in eval mode, on the CPU) to an ONNX file with a dynamic batch axis.

    Uses torch's default exporter, ``torch.onnx.export(..., dynamo=True)`` (torch.export
    plus onnxscript); the legacy TorchScript exporter (``dynamo=False``) is deprecated.
    The input is named ``images`` and the output ``logits``; their first axis is ``batch``,
    so the file runs on any batch size. The model itself is not changed (a copy is exported),
    and the file is written atomically in one piece (no external data file).

    Args:
        model: the network to export.
        path: the ``.onnx`` file to write.
        input_shape: the shape of one input batch, ``(N, C, H, W)``; only ``C, H, W`` are
            fixed in the file.
        opset_version: the ONNX operator set.

    Returns:
        The path written.

    >>> from kdbook.models import build_model
    >>> import tempfile
    >>> net = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    >>> export_onnx(net, Path(tempfile.mkdtemp()) / "tiny.onnx", (1, 1, 8, 8)).name
    'tiny.onnx'
    """
    from kdbook.io import atomic_write

    if len(input_shape) < 2 or not all(isinstance(d, int) and d >= 1 for d in input_shape):
        raise ValueError(f"input_shape must be (N, C, ...) of integers >= 1, got {input_shape!r}")
    model = copy.deepcopy(model).cpu().eval()
    # torch.export specialises a dimension of size 1: trace with a batch of 2 at least.
    example = torch.randn((max(2, input_shape[0]), *input_shape[1:]))
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset_version,
        external_data=False,
        verbose=False,
    )
    blob = program.model_proto.SerializeToString()
    return atomic_write(path, lambda f: f.write(blob))


@dataclass
class OnnxCheck:
    """Result of :func:`check_onnx`: agreement with PyTorch and the latency of both."""

    batch: int
    max_abs_diff: float
    torch_ms: float
    onnx_ms: float
    threads: int

    def row(self) -> dict[str, float | int]:
        """One flat row for a results table."""
        return dict(vars(self))


def check_onnx(
    model: nn.Module, path: str | Path, batch: int, *, warmup: int = 10, repeats: int = 50
) -> OnnxCheck:
    """Run an exported model in onnxruntime and compare it with PyTorch on one random batch.

    onnxruntime runs on its ``CPUExecutionProvider`` with as many threads as PyTorch uses
    (``torch.get_num_threads()``), so that the two latencies compare like with like. Both
    are measured the same way: warm-up calls first, then the median of ``repeats`` calls
    timed with ``time.perf_counter`` (:func:`kdbook.evaluate.median_ms`), the input already
    in memory (PyTorch's by :func:`kdbook.evaluate.latency_ms`).

    Args:
        model: the PyTorch model the file was exported from.
        path: the ``.onnx`` file (from :func:`export_onnx`).
        batch: the batch size to run, any size (the batch axis is dynamic).

    Returns:
        An :class:`OnnxCheck`: max absolute difference of the logits, and milliseconds per
        batch for PyTorch and onnxruntime.
    """
    import onnxruntime as ort

    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist (write it with export_onnx)")
    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feature_shape = tuple(session.get_inputs()[0].shape[1:])
    x = torch.randn((batch, *feature_shape))
    feed = {session.get_inputs()[0].name: x.numpy()}
    reference = copy.deepcopy(model).cpu().eval()
    with torch.inference_mode():
        expected = reference(x).numpy()
    got = session.run(None, feed)[0]
    if got.shape != expected.shape:
        raise ValueError(f"ONNX file {path} outputs shape {got.shape}, the model {expected.shape}")
    onnx_ms = median_ms(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)
    return OnnxCheck(
        batch=batch,
        max_abs_diff=float(abs(got - expected).max()),
        torch_ms=latency_ms(reference, x.shape, "cpu", warmup=warmup, repeats=repeats),
        onnx_ms=onnx_ms,
        threads=threads,
    )
