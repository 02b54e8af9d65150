// CPU forward of densenets::deform_conv2d reading the input channels-last.
//
// With the input as (N, H, W, C), the four corners of a bilinear sample are C-long
// contiguous rows shared by all channels of a deformable group, so filling the column
// buffer is a vectorised blend of four rows per (output position, kernel point) instead
// of one scalar gather per (channel, kernel point, position) as in the NCHW layout. The
// columns of a block of B output positions form a (B, G * K * C / G) matrix, rows ordered
// (weight group, kernel point, channel). Each thread samples, fills and multiplies its own
// blocks: a block's columns (about 4 MiB) are multiplied while they are still in cache,
// and no whole-layer column buffer is written to memory and read back. The GEMM writes
// the output in place, bias included (addmm), in the output's own layout:
//   NCHW:          out_n[:, p0:p0+B] (C_out / G, B) = W'_g @ columns_g^T  (ldc = H_out * W_out)
//   channels-last: out[q0:q0+B, :]   (B, C_out / G) = columns_g @ W'_g^T  (ldc = C_out)
// with W' = weight reordered to (C_out, K, C / G). The output is channels-last when the
// input is (as F.conv2d), else NCHW; a channels-last input is read without a copy, an NCHW
// one is transposed once in 8 x 8 tiles. NCHW blocks never straddle two images.
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

// Bytes of one block's columns: a core's share of L3 (measured best among 0.5-16 MiB on a
// 2-core EPYC with 32 MiB L3, on one and on two threads).
constexpr int64_t kBlockBytes = int64_t(4) << 20;

// table[(l * D + d) * K + k]: the sample of position q0 + l, offset = pixel index in the
// batch (n * H * W + y * W + x), weights multiplied by the mask. Nested loops: no integer
// division per sample.
template <typename T>
void build_table(const DeformGeometry& g, const T* offset, const T* mask, int64_t q0, int64_t len,
                 BilinearSample<T>* table) {
  const int64_t points = g.points(), positions = g.positions();
  int64_t n = q0 / positions, p = q0 % positions;
  for (int64_t l = 0; l < len; ++l) {
    const int64_t oy = p / g.out_w, ox = p % g.out_w;
    const T* off = offset + n * g.deform_groups * points * 2 * positions + p;
    const T* m = mask != nullptr ? mask + n * g.deform_groups * points * positions + p : nullptr;
    for (int64_t dk = 0, i = 0; i < g.deform_groups * g.kernel_h; ++i) {
      const T y0 = T(grid_y(g, oy, i % g.kernel_h));
      for (int64_t j = 0; j < g.kernel_w; ++j, ++dk) {
        const T y = y0 + off[2 * dk * positions], x = T(grid_x(g, ox, j)) + off[(2 * dk + 1) * positions];
        BilinearSample<T> s = bilinear_sample(y, x, g.height, g.width);
        s.offset += n * g.plane();
        if (m != nullptr) {
          const T w = m[dk * positions];
          for (int c = 0; c < 4; ++c) s.w[c] *= w;
        }
        *table++ = s;
      }
    }
    if (++p == positions) p = 0, ++n;
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

// A run of channels [c0, c0 + count) of one deformable group inside one weight group,
// whose column entries for kernel point k start at column row offset dst + k * step.
struct ChannelRun {
  int64_t c0, count, dst, step;
};

// The runs of every deformable group in order: the group's channels split where weight
// groups begin (computed once, not per sample).
std::vector<ChannelRun> channel_runs(const DeformGeometry& g) {
  const int64_t per_deform = g.channels / g.deform_groups, per_group = g.channels / g.groups;
  std::vector<ChannelRun> runs;
  for (int64_t c0 = 0; c0 < g.channels;) {
    const int64_t gi = c0 / per_group, c1 = std::min((c0 / per_deform + 1) * per_deform, (gi + 1) * per_group);
    runs.push_back({c0, c1 - c0, gi * g.points() * per_group + (c0 - gi * per_group), per_group});
    c0 = c1;
  }
  return runs;
}

// Column rows [l0, l1) of the chunk from the NHWC input.
template <typename T>
DN_ALWAYS_INLINE void fill_rows(const DeformGeometry& g, const T* input, const BilinearSample<T>* table,
                                const std::vector<ChannelRun>& runs, int64_t l0, int64_t l1, T* columns) {
  const int64_t channels = g.channels, points = g.points(), row = channels * points;
  const int64_t per_deform = channels / g.deform_groups;
  for (int64_t l = l0; l < l1; ++l) {
    T* dst_row = columns + l * row;
    const ChannelRun* run = runs.data();
    for (int64_t d = 0; d < g.deform_groups; ++d) {
      const ChannelRun* end = run;
      while (end != runs.data() + runs.size() && end->c0 < (d + 1) * per_deform) ++end;
      for (int64_t k = 0; k < points; ++k) {
        const BilinearSample<T>& s = table[(l * g.deform_groups + d) * points + k];
        const T* base = input + s.offset * channels;
        const int64_t dx = s.dx * channels, dy = static_cast<int64_t>(s.dy) * channels;
        for (const ChannelRun* r = run; r != end; ++r)
          blend4<T>(dst_row + r->dst + k * r->step, base + r->c0, dx, dy, s.w, r->count);
      }
      run = end;
    }
  }
}

#if DN_X86_DISPATCH
DN_TARGET_AVX void fill_rows_avx(const DeformGeometry& g, const float* input, const BilinearSample<float>* table,
                                 const std::vector<ChannelRun>& runs, int64_t l0, int64_t l1, float* columns) {
  fill_rows<float>(g, input, table, runs, l0, l1, columns);
}
#endif

template <typename T>
void fill_block(const DeformGeometry& g, const T* input, const BilinearSample<T>* table,
                const std::vector<ChannelRun>& runs, int64_t len, T* columns) {
#if DN_X86_DISPATCH
  if constexpr (std::is_same_v<T, float>) {
    if (have_avx_fma()) return fill_rows_avx(g, input, table, runs, 0, len, columns);
  }
#endif
  fill_rows<T>(g, input, table, runs, 0, len, columns);
}

// Blocks of output positions: at most kBlockBytes of columns, or DENSENETS_DEFORM_CONV_BUDGET
// elements (tests use it to make blocks small), in multiples of 16 positions (odd GEMM
// sizes run slower). Blocks split each segment (an image for an NCHW output, whose block
// outputs are then (C_out, len) slices of one image; the whole batch channels-last) into
// equal parts.
struct Blocks {
  int64_t segment, per_segment, length;  // positions per segment, blocks per segment, positions per block

  int64_t count(const DeformGeometry& g) const { return g.columns() / segment * per_segment; }
  // First position (column) of block b and its number of positions.
  int64_t start(int64_t b) const { return b / per_segment * segment + b % per_segment * length; }
  int64_t size(int64_t b) const { return std::min(length, segment - b % per_segment * length); }
};

Blocks make_blocks(const DeformGeometry& g, int64_t element_size, bool channels_last) {
  const int64_t budget = column_budget(kBlockBytes / element_size);
  const int64_t segment = channels_last ? std::max<int64_t>(1, g.columns()) : g.positions();
  int64_t most = std::max<int64_t>(1, std::min<int64_t>(budget / g.rows(), segment));
  if (most >= 16) most -= most % 16;
  const int64_t parts = (segment + most - 1) / most, even = (segment + parts - 1) / parts;
  const int64_t length = most >= 16 ? std::min(most, (even + 15) / 16 * 16) : most;
  return {segment, (segment + length - 1) / length, length};
}

// out = the block's columns times W'_g^T for every weight group g, plus the bias:
// channels-last, out is (len, C_out); else out is (C_out, len) (positions of one image).
void multiply(const at::Tensor& cols, const at::Tensor& weight, const at::Tensor& bias, bool channels_last,
              at::Tensor out) {
  const int64_t groups = weight.size(0), per_group = weight.size(1), width = weight.size(2);
  for (int64_t gi = 0; gi < groups; ++gi) {
    const at::Tensor c = cols.narrow(1, gi * width, width), w = weight[gi];
    at::Tensor o = out.narrow(channels_last ? 1 : 0, gi * per_group, per_group);
    const at::Tensor a = channels_last ? c : w, b = channels_last ? w.t() : c.t();
    if (!bias.defined()) {
      at::mm_out(o, a, b);
      continue;
    }
    const at::Tensor bg = bias.narrow(0, gi * per_group, per_group);
    at::addmm_out(o, channels_last ? bg : bg.unsqueeze(1), a, b);
  }
}

template <typename T>
void forward_blocks(const DeformGeometry& g, const at::Tensor& input, const at::Tensor& offset,
                    const at::Tensor& mask, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out) {
  const bool channels_last = out.is_contiguous(at::MemoryFormat::ChannelsLast) && !out.is_contiguous();
  const Blocks blocks = make_blocks(g, sizeof(T), channels_last);
  const int64_t rows = g.rows(), block = blocks.length, positions = g.positions();
  // (N * P, C_out) channels-last, else (N, C_out, P): both views of out's memory.
  const at::Tensor out_rows = channels_last ? out.permute({0, 2, 3, 1}).reshape({g.columns(), g.out_channels})
                                            : out.view({g.batch, g.out_channels, positions});
  const T* mask_ptr = mask.defined() ? mask.data_ptr<T>() : nullptr;
  const std::vector<ChannelRun> runs = channel_runs(g);
  const T *in = input.data_ptr<T>(), *off = offset.data_ptr<T>();
  // One block per task; GEMMs inside a parallel region run on the calling thread.
  at::parallel_for(0, blocks.count(g), 1, [&](int64_t b0, int64_t b1) {
    // Worker threads do not inherit the dispatcher state this kernel runs under: without
    // the guard, a weight that requires grad sends their at::mm calls through autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor columns = at::empty({block, rows}, input.options());
    std::vector<BilinearSample<T>> table(block * g.deform_groups * g.points());
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q0 = blocks.start(b), len = blocks.size(b);
      build_table<T>(g, off, mask_ptr, q0, len, table.data());
      fill_block<T>(g, in, table.data(), runs, len, columns.data_ptr<T>());
      const at::Tensor cols = columns.narrow(0, 0, len);
      if (channels_last)
        multiply(cols, weight, bias, true, out_rows.narrow(0, q0, len));
      else
        multiply(cols, weight, bias, false, out_rows[q0 / positions].narrow(1, q0 % positions, len));
    }
  });
}

// dst (cols, rows) = src (rows, cols)^T for an 8 x 8 tile (both with leading dimensions).
template <typename T>
DN_ALWAYS_INLINE void transpose8(const T* src, int64_t ld_src, T* dst, int64_t ld_dst) {
  T tile[8][8];
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) tile[j][i] = src[i * ld_src + j];
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < 8; ++i) dst[j * ld_dst + i] = tile[j][i];
}

// (N, H, W, C)-contiguous dst from (N, C, H, W)-contiguous src, in parallel over tiles of
// kTile positions of one image (all channels), by 8 x 8 blocks where they fit.
template <typename T>
void transpose_planes(const T* src, T* dst, int64_t batch, int64_t channels, int64_t plane) {
  constexpr int64_t kTile = 64;
  const int64_t tiles = (plane + kTile - 1) / kTile, image = channels * plane;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / (kTile * channels));
  at::parallel_for(0, batch * tiles, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / tiles, p0 = (t % tiles) * kTile, p1 = std::min(plane, p0 + kTile);
      const T* s = src + n * image;
      T* d = dst + n * image;
      const int64_t c8 = channels - channels % 8, p8 = p0 + (p1 - p0) / 8 * 8;
      for (int64_t c = 0; c < c8; c += 8)
        for (int64_t p = p0; p < p8; p += 8) transpose8(s + c * plane + p, plane, d + p * channels + c, channels);
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t c = p < p8 ? c8 : 0; c < channels; ++c) d[p * channels + c] = s[c * plane + p];
    }
  });
}

// The input as an (N, H, W, C)-contiguous tensor: a view of a channels-last input, else a copy.
at::Tensor channels_last_input(const at::Tensor& input) {
  const at::Tensor view = input.permute({0, 2, 3, 1});
  if (view.is_contiguous()) return view;
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(view.sizes(), input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_nhwc_input", [&] {
    transpose_planes<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.size(0), x.size(1),
                               x.size(2) * x.size(3));
  });
  return out;
}

}  // namespace

bool nhwc_forward_suits(const DeformGeometry& g) {
  const char* env = std::getenv("DENSENETS_DEFORM_CONV_LAYOUT");
  if (env != nullptr && std::strcmp(env, "nhwc") == 0) return true;
  if (env != nullptr && std::strcmp(env, "nchw") == 0) return false;
  // Blends of at least 8 channels vectorise; fewer are faster as scalar NCHW gathers.
  return std::min(g.channels / g.deform_groups, g.channels / g.groups) >= 8;
}

bool channels_last_output(const at::Tensor& input) {
  return input.is_contiguous(at::MemoryFormat::ChannelsLast) && !input.is_contiguous();
}

at::Tensor deform_conv2d_forward_nhwc_cpu(const DeformGeometry& g, const at::Tensor& input, const at::Tensor& offset,
                                          const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                          const std::optional<at::Tensor>& bias) {
  const at::Tensor x = channels_last_input(input);
  const at::Tensor off = offset.contiguous();
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t per_group = g.channels / g.groups;
  // W' (G, C_out / G, K * C / G), ordered (kernel point, channel) like the column rows.
  const at::Tensor w = weight.reshape({g.groups, g.out_channels / g.groups, per_group, g.points()})
                           .transpose(2, 3)
                           .contiguous()
                           .view({g.groups, g.out_channels / g.groups, g.points() * per_group});
  const auto format = channels_last_output(input) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_nhwc_cpu",
                             [&] { forward_blocks<scalar_t>(g, x, off, m, w, b, out); });
  return out;
}

}  // namespace densenets
