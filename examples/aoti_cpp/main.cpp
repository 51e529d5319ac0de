// Run a pcseg AOTInductor package from C++ (libtorch, no Python): points in, labels out.
//
//   aoti_run [--ops LIBRARY.so] MODEL.pt2 POINTS.bin D C [LOGITS.bin]
//
// --ops: a library of the ops the package calls, loaded before it: pcseg's compiled CPU kernels
// (python -c "from pcseg.sparse.kernels import cpu; print(cpu.library_path())") for a package
// exported with the traced convolution form "kernel" (pcseg-export --traced-conv kernel).
// POINTS.bin: float32 rows of D coordinates followed by C features (a SemanticKITTI
// velodyne/*.bin scan is D=3, C=1: x, y, z, remission). Prints "points N classes K" and the
// number of points per predicted class; writes the (N, K) float32 logits to LOGITS.bin if given.
#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <dlfcn.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const char* program = argv[0];
  if (argc > 2 && std::string(argv[1]) == "--ops") {
    if (!dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL)) {  // its static initialisers register the ops
      std::cerr << "error: --ops " << argv[2] << ": " << dlerror() << "\n";
      return 1;
    }
    argc -= 2;
    argv += 2;
  }
  if (argc < 5) {
    std::cerr << "usage: " << program << " [--ops LIBRARY.so] MODEL.pt2 POINTS.bin D C [LOGITS.bin]\n";
    return 2;
  }
  const std::string package = argv[1], points_path = argv[2];
  const int64_t dim = std::stoll(argv[3]), channels = std::stoll(argv[4]);
  std::ifstream in(points_path, std::ios::binary | std::ios::ate);
  if (!in) {
    std::cerr << "error: " << points_path << ": cannot open\n";
    return 1;
  }
  const std::streamsize bytes = in.tellg();
  const int64_t row = dim + channels;
  if (bytes <= 0 || bytes % (row * static_cast<std::streamsize>(sizeof(float))) != 0) {
    std::cerr << "error: " << points_path << ": size " << bytes << " bytes is not a positive multiple of "
              << row << " float32 values per point\n";
    return 1;
  }
  const int64_t n = bytes / (row * static_cast<std::streamsize>(sizeof(float)));
  std::vector<float> data(static_cast<size_t>(n * row));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(data.data()), bytes);

  at::Tensor all = at::from_blob(data.data(), {n, row}, at::kFloat);
  at::Tensor points = all.slice(1, 0, dim).contiguous();
  at::Tensor feats = all.slice(1, dim, row).contiguous();

  std::vector<at::Tensor> outputs;
  try {
    torch::inductor::AOTIModelPackageLoader loader(package);
    outputs = loader.run({points, feats});
  } catch (const c10::Error& e) {  // e.g. a package calling pcseg's ops without --ops
    std::cerr << "error: " << package << ": " << e.what_without_backtrace() << "\n";
    return 1;
  }
  at::Tensor logits = outputs.at(0).contiguous();
  at::Tensor labels = logits.argmax(1);
  std::cout << "points " << logits.size(0) << " classes " << logits.size(1) << "\n";
  at::Tensor counts = at::bincount(labels, {}, logits.size(1));
  for (int64_t k = 0; k < counts.size(0); ++k) {
    std::cout << "class " << k << " " << counts[k].item<int64_t>() << "\n";
  }
  if (argc > 5) {
    std::ofstream out(argv[5], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data_ptr<float>()), logits.numel() * sizeof(float));
    if (!out) {
      std::cerr << "error: " << argv[5] << ": cannot write\n";
      return 1;
    }
  }
  return 0;
}
