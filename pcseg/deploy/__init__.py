"""pcseg.deploy: a trained backbone as one program, points in, per-point logits out.

    from pcseg.deploy import PointsToLogits, export_program, save_pt2, save_aoti, save_onnx
    module = PointsToLogits(model, voxel_size=0.05)
    program = export_program(module)
    save_pt2(program, "model.pt2")          # torch.export.load in any process, no pcseg needed
    save_aoti(program, "model_aoti.pt2")    # AOTInductor package: C++ libtorch, no Python
    save_onnx(program, "model.onnx")        # ONNX Runtime
    fast = export_program(module, conv="kernel")  # pcseg's CPU kernel per convolution: the runtime
    save_aoti(fast, "model_kernel_aoti.pt2")       # loads pcseg.sparse.kernels.cpu.library_path()

Imports only :mod:`pcseg.sparse` and :mod:`pcseg.models`.
"""
from .export import (ONNX_OPS, example_inputs, export_program, onnx_op_types, pcseg_ops, save_aoti, save_onnx,
                     save_pt2)
from .pipeline import PointsToLogits

__all__ = ["PointsToLogits", "ONNX_OPS", "example_inputs", "export_program", "save_pt2", "save_aoti", "save_onnx",
           "pcseg_ops", "onnx_op_types"]
