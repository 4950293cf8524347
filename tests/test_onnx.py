"""ONNX export with a dynamic batch axis, checked against PyTorch in onnxruntime."""

from __future__ import annotations

import onnx
import pytest
import torch

from kdbook.deploy import ONNX_INPUT, ONNX_OUTPUT, check_onnx, export_onnx
from kdbook.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name", ["tiny_cnn", "digits_teacher"])
def test_export_runs_in_onnxruntime_on_any_batch(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(name, 10, in_channels=1, image_size=8)
    path = export_onnx(model, tmp_path / f"{name}.onnx", (1, 1, 8, 8))
    assert model.training  # exported from a copy: the model is left as it was
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # no temporary left
    graph = onnx.load(str(path)).graph
    onnx.checker.check_model(onnx.load(str(path)))
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == (ONNX_INPUT, ONNX_OUTPUT)
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch",
        1,
        8,
        8,
    ]
    for batch in (1, 7):
        check = check_onnx(model, path, batch, warmup=2, repeats=5)
        assert check.batch == batch and check.threads == 1
        assert check.max_abs_diff < 1e-4
        assert check.torch_ms > 0 and check.onnx_ms > 0


def test_export_rejects_a_bad_shape_and_check_a_missing_file(tmp_path) -> None:
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match=r"input_shape must be \(N, C, ...\)"):
        export_onnx(model, tmp_path / "m.onnx", (8, 8.0))
    with pytest.raises(FileNotFoundError, match="write it with export_onnx"):
        check_onnx(model, tmp_path / "absent.onnx", 1)
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        check_onnx(model, tmp_path / "absent.onnx", 0)
