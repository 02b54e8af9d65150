// CPU forward of densenets::deform_conv2d reading the input channels-last.
//
// With the input as (N, H, W, C), the four corners of a bilinear sample are C-long
// contiguous rows shared by all channels of a deformable group, so filling the column
// buffer is a vectorised blend of four rows per (output position, kernel point) instead
// of one scalar gather per (channel, kernel point, position) as in the NCHW layout. The
// columns of a block of B output positions form a (B, G * K * C / G) matrix, rows ordered
// (weight group, kernel point, channel), and the GEMM
//   out (B, C_out / G) = columns_g (B, K * C / G) @ W'_g^T
// (W' = weight reordered to (C_out, K, C / G)) writes B rows of the channels-last output.
// Each thread samples, fills and multiplies its own blocks: a block's columns (about
// 4 MiB) are multiplied while they are still in cache, and no whole-layer column buffer
// is written to memory and read back.
// The output is returned NCHW-contiguous, as from the other kernels (one transpose).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "cpu/vec_dispatch.h"
#include "deform_conv2d.h"

namespace densenets {
namespace {

// Bytes of one block's columns: a core's share of L3 (measured best among 0.5-8 MiB on a
// 2-core EPYC with 32 MiB L3: 1.2x F.conv2d at 4 MiB, 1.5x at 1 MiB).
constexpr int64_t kBlockBytes = int64_t(4) << 20;

// table[(l * D + d) * K + k]: the sample of position q0 + l, offset = pixel index in the
// batch (n * H * W + y * W + x), weights multiplied by the mask.
template <typename T>
void build_table(const DeformGeometry& g, const T* offset, const T* mask, int64_t q0, int64_t len,
                 BilinearSample<T>* table) {
  const int64_t points = g.points(), positions = g.positions(), per_position = g.deform_groups * points;
  for (int64_t t = 0; t < len * per_position; ++t) {
    const int64_t l = t / per_position, d = (t / points) % g.deform_groups, k = t % points;
    const int64_t q = q0 + l, n = q / positions, p = q % positions;
    const int64_t oi = offset_index(g, n, p, d, k);
    const T y = T(grid_y(g, p / g.out_w, k / g.kernel_w)) + offset[oi];
    const T x = T(grid_x(g, p % g.out_w, k % g.kernel_w)) + offset[oi + positions];
    BilinearSample<T> s = bilinear_sample(y, x, g.height, g.width);
    s.offset += n * g.plane();
    if (mask != nullptr) {
      const T m = mask[mask_index(g, n, p, d, k)];
      for (int i = 0; i < 4; ++i) s.w[i] *= m;
    }
    table[t] = s;
  }
}

// dst[c] = w0 * v[c] + w1 * v[dx + c] + w2 * v[dy + c] + w3 * v[dy + dx + c]
template <typename T>
DN_ALWAYS_INLINE void blend4(T* __restrict__ dst, const T* __restrict__ v, int64_t dx, int64_t dy, const T* w,
                             int64_t n) {
  const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  const T *__restrict__ v1 = v + dx, *__restrict__ v2 = v + dy, *__restrict__ v3 = v + dy + dx;
  for (int64_t c = 0; c < n; ++c) dst[c] = w0 * v[c] + w1 * v1[c] + w2 * v2[c] + w3 * v3[c];
}

// Column rows [l0, l1) of the chunk from the NHWC input.
template <typename T>
DN_ALWAYS_INLINE void fill_rows(const DeformGeometry& g, const T* input, const BilinearSample<T>* table, int64_t l0,
                                int64_t l1, T* columns) {
  const int64_t channels = g.channels, points = g.points(), row = channels * points;
  const int64_t per_deform = channels / g.deform_groups, per_group = channels / g.groups;
  for (int64_t l = l0; l < l1; ++l) {
    T* dst_row = columns + l * row;
    for (int64_t d = 0; d < g.deform_groups; ++d) {
      for (int64_t k = 0; k < points; ++k) {
        const BilinearSample<T>& s = table[(l * g.deform_groups + d) * points + k];
        const T* base = input + s.offset * channels;
        const int64_t dx = s.dx * channels, dy = static_cast<int64_t>(s.dy) * channels;
        // The deformable group's channels, split where weight groups begin.
        for (int64_t c0 = d * per_deform, c_end = (d + 1) * per_deform; c0 < c_end;) {
          const int64_t gi = c0 / per_group, c1 = std::min(c_end, (gi + 1) * per_group);
          T* dst = dst_row + gi * points * per_group + k * per_group + (c0 - gi * per_group);
          blend4<T>(dst, base + c0, dx, dy, s.w, c1 - c0);
          c0 = c1;
        }
      }
    }
  }
}

#if DN_X86_DISPATCH
DN_TARGET_AVX void fill_rows_avx(const DeformGeometry& g, const float* input, const BilinearSample<float>* table,
                                 int64_t l0, int64_t l1, float* columns) {
  fill_rows<float>(g, input, table, l0, l1, columns);
}
#endif

template <typename T>
void fill_block(const DeformGeometry& g, const T* input, const BilinearSample<T>* table, int64_t len, T* columns) {
#if DN_X86_DISPATCH
  if constexpr (std::is_same_v<T, float>) {
    if (have_avx_fma()) return fill_rows_avx(g, input, table, 0, len, columns);
  }
#endif
  fill_rows<T>(g, input, table, 0, len, columns);
}

// Output positions per block: kBlockBytes of columns (at least one position), or
// DENSENETS_DEFORM_CONV_BUDGET elements of columns (tests use it to make blocks small).
int64_t block_positions(const DeformGeometry& g, int64_t element_size) {
  const int64_t budget = column_budget(kBlockBytes / element_size);
  return std::max<int64_t>(1, std::min<int64_t>(budget / g.rows(), g.columns()));
}

template <typename T>
void forward_blocks(const DeformGeometry& g, const at::Tensor& input, const at::Tensor& offset,
                    const at::Tensor& mask, const at::Tensor& weight, at::Tensor& out2) {
  const int64_t groups = g.groups, out_per_group = g.out_channels / groups, rows = g.rows();
  const int64_t per_group_row = rows / groups, block = block_positions(g, sizeof(T));
  const int64_t blocks = (g.columns() + block - 1) / block;
  const T* mask_ptr = mask.defined() ? mask.data_ptr<T>() : nullptr;
  const T *in = input.data_ptr<T>(), *off = offset.data_ptr<T>();
  // One block per task; GEMMs inside a parallel region run on the calling thread.
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    // Worker threads do not inherit the dispatcher state this kernel runs under: without
    // the guard, a weight that requires grad sends their at::mm calls through autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor columns = at::empty({block, rows}, input.options());
    std::vector<BilinearSample<T>> table(block * g.deform_groups * g.points());
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q0 = b * block, len = std::min(block, g.columns() - q0);
      build_table<T>(g, off, mask_ptr, q0, len, table.data());
      fill_block<T>(g, in, table.data(), len, columns.data_ptr<T>());
      const at::Tensor cols = columns.narrow(0, 0, len);
      at::Tensor out = out2.narrow(0, q0, len);
      if (groups == 1) {
        at::mm_out(out, cols, weight[0].t());
        continue;
      }
      for (int64_t gi = 0; gi < groups; ++gi)
        out.narrow(1, gi * out_per_group, out_per_group)
            .copy_(at::mm(cols.narrow(1, gi * per_group_row, per_group_row), weight[gi].t()));
    }
  });
}

}  // namespace

bool nhwc_forward_suits(const DeformGeometry& g) {
  const char* env = std::getenv("DENSENETS_DEFORM_CONV_LAYOUT");
  if (env != nullptr && std::strcmp(env, "nhwc") == 0) return true;
  if (env != nullptr && std::strcmp(env, "nchw") == 0) return false;
  // Blends of at least 8 channels vectorise; fewer are faster as scalar NCHW gathers.
  return std::min(g.channels / g.deform_groups, g.channels / g.groups) >= 8;
}

at::Tensor deform_conv2d_forward_nhwc_cpu(const DeformGeometry& g, const at::Tensor& input, const at::Tensor& offset,
                                          const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                          const std::optional<at::Tensor>& bias) {
  const at::Tensor x = input.permute({0, 2, 3, 1}).contiguous();  // (N, H, W, C)
  const at::Tensor off = offset.contiguous();
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  const int64_t per_group = g.channels / g.groups;
  // W' (G, C_out / G, K * C / G), ordered (kernel point, channel) like the column rows.
  const at::Tensor w = weight.reshape({g.groups, g.out_channels / g.groups, per_group, g.points()})
                           .transpose(2, 3)
                           .contiguous()
                           .view({g.groups, g.out_channels / g.groups, g.points() * per_group});
  at::Tensor out = at::empty({g.batch, g.out_h, g.out_w, g.out_channels}, input.options());
  at::Tensor out2 = out.view({g.columns(), g.out_channels});
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_nhwc_cpu",
                             [&] { forward_blocks<scalar_t>(g, x, off, m, w, out2); });
  if (bias.has_value()) out2.add_(*bias);
  // clone, not contiguous(): for a 1 x 1 output the permuted view is already contiguous,
  // and an op must not return a view of its own buffer (autograd forbids in-place on it).
  return out.permute({0, 3, 1, 2}).clone(at::MemoryFormat::Contiguous);
}

}  // namespace densenets
