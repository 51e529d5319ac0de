// pcseg's CPU sparse-convolution kernels: neighbour-table look-up by merge join, and an
// output-stationary gather-GEMM for the convolution and its weight gradient.
//
// Everything works on a neighbour table (N_out, K) int32: table[o, k] is the input row that feeds
// output o through kernel offset k, or -1. The convolution computes each output row in a fixed order
// (offsets 0..K-1, input channels 0..C_in-1), one row block per task, so its result does not depend
// on the number of threads; the weight gradient sums the rows of offset k in row order, one task per
// offset. Only float32 features.
//
// The kernels are dispatcher ops, pcseg::conv_forward, pcseg::conv_weight_grad and
// pcseg::lookup_table (CPU), in a plain shared library without Python: Python loads it with
// torch.ops.load_library (pcseg/sparse/kernels/cpu.py), and a C++ process that runs an
// AOTInductor package calling them dlopens it before loading the package (examples/aoti_cpp).
// Each op checks its inputs itself, since a compiled program calls it without the Python side.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

typedef float vec8 __attribute__((vector_size(32), aligned(4)));
constexpr int ROWS = 6;     // rows of the register tile: 6 x 16 floats = 12 vector accumulators
constexpr int COLS = 16;    // columns of the register tile (two vectors)
constexpr int BLOCK = 256;  // output rows per task of the forward kernel
constexpr int DEPTH = 32;   // gathered rows per step of the weight-gradient kernel

// acc[j][c0:c0+COLS] += sum_d a[j][d * a_step] * b[d * b_step + c0 : ... + COLS] for j < ROWS.
// a: ROWS row pointers (rows past `valid` repeat a valid row; their results are not stored).
inline void tile(const float* const* a, int64_t a_step, const float* b, int64_t b_step, int64_t depth,
                 float* const* acc, int64_t c0, int valid) {
  vec8 s[ROWS][2];
  for (int j = 0; j < ROWS; ++j)
    for (int v = 0; v < 2; ++v) s[j][v] = *reinterpret_cast<const vec8*>(acc[j] + c0 + 8 * v);
  for (int64_t d = 0; d < depth; ++d) {
    const float* br = b + d * b_step + c0;
    const vec8 b0 = *reinterpret_cast<const vec8*>(br), b1 = *reinterpret_cast<const vec8*>(br + 8);
    for (int j = 0; j < ROWS; ++j) {
      const float x = a[j][d * a_step];
      const vec8 xb = {x, x, x, x, x, x, x, x};
      s[j][0] += xb * b0;
      s[j][1] += xb * b1;
    }
  }
  for (int j = 0; j < valid; ++j)
    for (int v = 0; v < 2; ++v) *reinterpret_cast<vec8*>(acc[j] + c0 + 8 * v) = s[j][v];
}

// The same product for the columns [c0, cols) left over after the full tiles, one at a time.
inline void tile_tail(const float* const* a, int64_t a_step, const float* b, int64_t b_step, int64_t depth,
                      float* const* acc, int64_t c0, int64_t cols, int valid) {
  for (int j = 0; j < valid; ++j)
    for (int64_t c = c0; c < cols; ++c) {
      float s = acc[j][c];
      for (int64_t d = 0; d < depth; ++d) s += a[j][d * a_step] * b[d * b_step + c];
      acc[j][c] = s;
    }
}

// acc rows += a rows (depth a_step apart) @ b, over all columns; pads the tile by repeating row 0.
inline void rows_times(const float** a, int64_t a_step, const float* b, int64_t cols, int64_t depth,
                       float** acc, int valid) {
  for (int j = valid; j < ROWS; ++j) {
    a[j] = a[0];
    acc[j] = acc[0];
  }
  int64_t c0 = 0;
  for (; c0 + COLS <= cols; c0 += COLS) tile(a, a_step, b, cols, depth, acc, c0, valid);
  if (c0 < cols) tile_tail(a, a_step, b, cols, depth, acc, c0, cols, valid);
}

// x as a contiguous float32 tensor of `dims` dimensions, else an error naming the op and the argument.
at::Tensor float_input(const at::Tensor& x, int64_t dims, const char* what, const char* name) {
  TORCH_CHECK(x.dim() == dims && x.scalar_type() == at::kFloat, what, ": ", name, " must be a ", dims,
              "-D float32 tensor, got a ", x.dim(), "-D ", x.scalar_type(), " tensor");
  return x.contiguous();
}

// x as a contiguous 1-D int64 tensor, else an error naming the argument of lookup_table.
at::Tensor long_vector_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kLong, "lookup_table: ", name,
              " must be a 1-D int64 tensor, got a ", x.dim(), "-D ", x.scalar_type(), " tensor");
  return x.contiguous();
}

// table as a contiguous (rows, K) int32 tensor whose entries are input rows below n_in, or -1.
at::Tensor table_input(const at::Tensor& table, int64_t n_in, const char* what) {
  TORCH_CHECK(table.dim() == 2 && table.scalar_type() == at::kInt, what,
              ": table must be a 2-D int32 tensor, got a ", table.dim(), "-D ", table.scalar_type(), " tensor");
  TORCH_CHECK(table.numel() == 0 || table.max().item<int32_t>() < n_in, what, ": table refers to row ",
              table.max().item<int32_t>(), " of ", n_in, " input rows");
  return table.contiguous();
}

}  // namespace

// out[o] = sum_k feats[table[o, k]] @ weight[k]; feats (N_in, C_in), weight (K, C_in, C_out) float32.
// Per block of BLOCK output rows and offset k: the rows with an input, then one column panel of
// weight[k] (C_in x COLS, kept in L1) against all of them, ROWS at a time.
at::Tensor conv_forward(const at::Tensor& feats_in, const at::Tensor& table_in, const at::Tensor& weight_in) {
  const at::Tensor feats = float_input(feats_in, 2, "conv_forward", "feats");
  const at::Tensor weight = float_input(weight_in, 3, "conv_forward", "weight");
  const at::Tensor table = table_input(table_in, feats.size(0), "conv_forward");
  const int64_t n_out = table.size(0), k_vol = table.size(1), c_in = feats.size(1), c_out = weight.size(2);
  TORCH_CHECK(weight.size(0) == k_vol && weight.size(1) == c_in, "conv_forward: weight must be (K, C_in, C_out)");
  auto out = at::empty({n_out, c_out}, feats.options());
  const float* f = feats.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const int32_t* t = table.data_ptr<int32_t>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, (n_out + BLOCK - 1) / BLOCK, 1, [&](int64_t first, int64_t last) {
    std::vector<const float*> a(BLOCK + ROWS);
    std::vector<float*> acc(BLOCK + ROWS);
    for (int64_t block = first; block < last; ++block) {
      const int64_t r0 = block * BLOCK, r1 = std::min(n_out, r0 + BLOCK);
      std::memset(o + r0 * c_out, 0, sizeof(float) * (r1 - r0) * c_out);
      for (int64_t k = 0; k < k_vol; ++k) {
        int64_t n = 0;
        for (int64_t r = r0; r < r1; ++r) {
          const int32_t row = t[r * k_vol + k];
          if (row < 0) continue;
          a[n] = f + row * c_in;
          acc[n] = o + r * c_out;
          ++n;
        }
        if (n == 0) continue;
        for (int64_t j = n; j < n + ROWS; ++j) {  // pad the last tile with copies of the first row
          a[j] = a[0];
          acc[j] = acc[0];
        }
        const float* wk = w + k * c_in * c_out;
        int64_t c0 = 0;
        for (; c0 + COLS <= c_out; c0 += COLS)
          for (int64_t j = 0; j < n; j += ROWS)
            tile(&a[j], 1, wk, c_out, c_in, &acc[j], c0, static_cast<int>(std::min<int64_t>(ROWS, n - j)));
        if (c0 < c_out)
          for (int64_t j = 0; j < n; j += ROWS)
            tile_tail(&a[j], 1, wk, c_out, c_in, &acc[j], c0, c_out, static_cast<int>(std::min<int64_t>(ROWS, n - j)));
      }
    }
  });
  return out;
}

// grad_weight[k] = sum_o feats[columns[k, o]]^T grad_out[o], (K, C_in, C_out) float32.
// columns: the neighbour table transposed, (K, N_out) int32, so that one offset's rows are contiguous.
at::Tensor conv_weight_grad(const at::Tensor& feats_in, const at::Tensor& grad_out_in, const at::Tensor& columns_in) {
  const at::Tensor feats = float_input(feats_in, 2, "conv_weight_grad", "feats");
  const at::Tensor grad_out = float_input(grad_out_in, 2, "conv_weight_grad", "grad_out");
  const at::Tensor columns = table_input(columns_in, feats.size(0), "conv_weight_grad");
  const int64_t k_vol = columns.size(0), n_out = columns.size(1), c_in = feats.size(1), c_out = grad_out.size(1);
  TORCH_CHECK(grad_out.size(0) == n_out, "conv_weight_grad: grad_out must have N_out rows");
  auto grad = at::zeros({k_vol, c_in, c_out}, feats.options());
  const float* f = feats.data_ptr<float>();
  const float* g = grad_out.data_ptr<float>();
  const int32_t* t = columns.data_ptr<int32_t>();
  float* gw = grad.data_ptr<float>();
  at::parallel_for(0, k_vol, 1, [&](int64_t first, int64_t last) {
    std::vector<float> xs(DEPTH * c_in), gs(DEPTH * c_out);  // the gathered rows
    for (int64_t k = first; k < last; ++k) {
      float* gk = gw + k * c_in * c_out;
      const int32_t* column = t + k * n_out;
      int64_t n = 0;
      auto flush = [&]() {  // gk += xs[:n]^T @ gs[:n]
        for (int64_t i0 = 0; i0 < c_in; i0 += ROWS) {
          const int valid = static_cast<int>(std::min<int64_t>(ROWS, c_in - i0));
          const float* a[ROWS];
          float* acc[ROWS];
          for (int j = 0; j < valid; ++j) {
            a[j] = xs.data() + i0 + j;
            acc[j] = gk + (i0 + j) * c_out;
          }
          rows_times(a, c_in, gs.data(), c_out, n, acc, valid);
        }
        n = 0;
      };
      for (int64_t r = 0; r < n_out; ++r) {
        const int32_t row = column[r];
        if (row < 0) continue;
        std::memcpy(xs.data() + n * c_in, f + row * c_in, sizeof(float) * c_in);
        std::memcpy(gs.data() + n * c_out, g + r * c_out, sizeof(float) * c_out);
        if (++n == DEPTH) flush();
      }
      if (n) flush();
    }
  });
  return grad;
}

// table[out_order[j], k] = in_order[i] where in_keys[i] == out_keys[j] + offset_keys[k], else -1.
// in_keys, out_keys: sorted int64; *_order: their rows in the coordinate sets. One merge join per
// offset (the shifted queries stay sorted), one task per offset.
at::Tensor lookup_table(const at::Tensor& in_keys_in, const at::Tensor& in_order_in, const at::Tensor& out_keys_in,
                        const at::Tensor& out_order_in, const at::Tensor& offset_keys_in) {
  const at::Tensor in_keys = long_vector_input(in_keys_in, "in_keys"), in_order = long_vector_input(in_order_in, "in_order");
  const at::Tensor out_keys = long_vector_input(out_keys_in, "out_keys");
  const at::Tensor out_order = long_vector_input(out_order_in, "out_order");
  const at::Tensor offset_keys = long_vector_input(offset_keys_in, "offset_keys");
  const int64_t n_in = in_keys.size(0), n_out = out_keys.size(0), k_vol = offset_keys.size(0);
  auto table = at::empty({n_out, k_vol}, in_keys.options().dtype(at::kInt));
  const int64_t* ik = in_keys.data_ptr<int64_t>();
  const int64_t* io = in_order.data_ptr<int64_t>();
  const int64_t* ok = out_keys.data_ptr<int64_t>();
  const int64_t* oo = out_order.data_ptr<int64_t>();
  const int64_t* dk = offset_keys.data_ptr<int64_t>();
  int32_t* t = table.data_ptr<int32_t>();
  at::parallel_for(0, k_vol, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      int64_t i = 0;
      for (int64_t j = 0; j < n_out; ++j) {
        const int64_t q = ok[j] + dk[k];
        while (i < n_in && ik[i] < q) ++i;
        t[oo[j] * k_vol + k] = (i < n_in && ik[i] == q) ? static_cast<int32_t>(io[i]) : -1;
      }
    }
  });
  return table;
}

TORCH_LIBRARY(pcseg, m) {
  m.def("conv_forward(Tensor feats, Tensor table, Tensor weight) -> Tensor");
  m.def("conv_weight_grad(Tensor feats, Tensor grad_out, Tensor columns) -> Tensor");
  m.def("lookup_table(Tensor in_keys, Tensor in_order, Tensor out_keys, Tensor out_order, Tensor offset_keys) -> Tensor");
}

TORCH_LIBRARY_IMPL(pcseg, CPU, m) {
  m.impl("conv_forward", &conv_forward);
  m.impl("conv_weight_grad", &conv_weight_grad);
  m.impl("lookup_table", &lookup_table);
}
