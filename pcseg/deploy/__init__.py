"""pcseg.deploy: a trained backbone as one program, points in, per-point logits out.

    from pcseg.deploy import PointsToLogits, export_program, save_pt2, save_aoti, save_onnx
    program = export_program(PointsToLogits(model, voxel_size=0.05))
    save_pt2(program, "model.pt2")          # torch.export.load in any process, no pcseg needed
    save_aoti(program, "model_aoti.pt2")    # AOTInductor package: C++ libtorch, no Python
    save_onnx(program, "model.onnx")        # ONNX Runtime

Imports only :mod:`pcseg.sparse` and :mod:`pcseg.models`.
"""
from .export import ONNX_OPS, example_inputs, export_program, onnx_op_types, save_aoti, save_onnx, save_pt2
from .pipeline import PointsToLogits

__all__ = ["PointsToLogits", "ONNX_OPS", "example_inputs", "export_program", "save_pt2", "save_aoti", "save_onnx",
           "onnx_op_types"]
