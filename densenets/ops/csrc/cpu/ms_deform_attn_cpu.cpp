// CPU kernels of densenets::ms_deform_attn and its backward.
//
// value[N, S, M, C] keeps a head's C channels of a pixel contiguous, so every bilinear
// sample is four C-long rows combined with four weights: the inner loops run over
// channels and vectorise. Work is split into rows r = (n, q, m), one output row of C
// channels each.
//   Forward: parallel over rows; each row accumulates its L * P samples in a C-long
//   buffer of the accumulation type (float32 for float32/bfloat16/float16).
//   Backward: the gradients of the locations and attention weights of a row are owned
//   by that row. grad_value[n, :, m, :] is written only by rows of image n and head m,
//   so the work is split by (n, m) (ownership, no atomics or locks); when there are
//   fewer (n, m) pairs than threads, each pair's queries are split into K parts, each
//   writing its own copy of grad_value, summed at the end. Results therefore do not
//   depend on scheduling.
// On x86 CPUs with AVX and FMA the loops are compiled a second time for those and
// chosen at run time (the extension itself is built for the baseline ISA).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

#include "cpu/vec_dispatch.h"
#include "ms_deform_attn.h"

namespace densenets {
namespace {

struct Level {
  int64_t height, width, start;
};

// Level sizes and starts, checked to lie inside value's S pixels.
std::vector<Level> level_table(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                               int64_t pixels) {
  const at::Tensor shapes = spatial_shapes.contiguous(), starts = level_start_index.contiguous();
  const int64_t* hw = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  std::vector<Level> levels(shapes.size(0));
  for (size_t l = 0; l < levels.size(); ++l) {
    const Level lv{hw[2 * l], hw[2 * l + 1], st[l]};
    TORCH_CHECK(lv.height >= 0 && lv.width >= 0 && lv.start >= 0 && lv.start + lv.height * lv.width <= pixels,
                "ms_deform_attn: level ", l, " (", lv.height, "x", lv.width, " starting at ", lv.start,
                ") does not fit in value's ", pixels, " pixels");
    levels[l] = lv;
  }
  return levels;
}

// acc[c] += w0 * p0[c] + w1 * p1[c] + w2 * p2[c] + w3 * p3[c]
template <typename T, typename A>
DN_ALWAYS_INLINE void gather4(A* __restrict__ acc, const T* __restrict__ p0, const T* __restrict__ p1,
                              const T* __restrict__ p2, const T* __restrict__ p3, A w0, A w1, A w2, A w3,
                              int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    acc[c] += w0 * static_cast<A>(p0[c]) + w1 * static_cast<A>(p1[c]) + w2 * static_cast<A>(p2[c]) +
              w3 * static_cast<A>(p3[c]);
}

// d[k] = sum_c g[c] * pk[c], with kLanes independent partial sums so that the loop
// vectorises without reassociating floating-point sums.
template <typename T, typename A>
DN_ALWAYS_INLINE void dot4(const A* __restrict__ g, const T* __restrict__ p0, const T* __restrict__ p1,
                           const T* __restrict__ p2, const T* __restrict__ p3, int64_t n, A* d) {
  constexpr int kLanes = 8;
  A s0[kLanes] = {}, s1[kLanes] = {}, s2[kLanes] = {}, s3[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const A gj = g[c + j];
      s0[j] += gj * static_cast<A>(p0[c + j]);
      s1[j] += gj * static_cast<A>(p1[c + j]);
      s2[j] += gj * static_cast<A>(p2[c + j]);
      s3[j] += gj * static_cast<A>(p3[c + j]);
    }
  for (int j = 1; j < kLanes; ++j) {
    s0[0] += s0[j];
    s1[0] += s1[j];
    s2[0] += s2[j];
    s3[0] += s3[j];
  }
  for (; c < n; ++c) {
    s0[0] += g[c] * static_cast<A>(p0[c]);
    s1[0] += g[c] * static_cast<A>(p1[c]);
    s2[0] += g[c] * static_cast<A>(p2[c]);
    s3[0] += g[c] * static_cast<A>(p3[c]);
  }
  d[0] = s0[0];
  d[1] = s1[0];
  d[2] = s2[0];
  d[3] = s3[0];
}

// out[c] += w * g[c]
template <typename A>
DN_ALWAYS_INLINE void axpy(A* __restrict__ out, const A* __restrict__ g, A w, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] += w * g[c];
}

template <typename T>
struct Inputs {
  const T* value;
  const T* loc;
  const T* attn;
  const Level* levels;
  MsdaGeometry g;
};

// Output rows [begin, end).
template <typename T, typename A>
DN_ALWAYS_INLINE void forward_rows(const Inputs<T>& in, T* out, int64_t begin, int64_t end) {
  const MsdaGeometry& g = in.g;
  const int64_t channels = g.channels, stride = g.pixel_stride(), samples = g.samples();
  std::vector<A> acc_buffer(channels);
  A* acc = acc_buffer.data();
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / (g.queries * g.heads), m = r % g.heads;
    const T* loc = in.loc + r * samples * 2;
    const T* attn = in.attn + r * samples;
    std::fill(acc, acc + channels, A(0));
    for (int64_t l = 0; l < g.levels; ++l) {
      const Level lv = in.levels[l];
      const T* base = in.value + (n * g.pixels + lv.start) * stride + m * channels;
      for (int64_t p = 0; p < g.points; ++p, loc += 2, ++attn) {
        const BilinearSample<A> s =
            msda_sample<A>(static_cast<A>(loc[0]), static_cast<A>(loc[1]), lv.height, lv.width);
        if (sample_empty(s)) continue;
        const A w = static_cast<A>(*attn);
        const T* p0 = base + s.offset * stride;
        const int64_t dx = s.dx * stride, dy = s.dy * stride;
        gather4<T, A>(acc, p0, p0 + dx, p0 + dy, p0 + dy + dx, w * s.w[0], w * s.w[1], w * s.w[2], w * s.w[3],
                      channels);
      }
    }
    T* o = out + r * channels;
    for (int64_t c = 0; c < channels; ++c) o[c] = static_cast<T>(acc[c]);
  }
}

template <typename T, typename A>
struct Grads {
  const T* grad_out;
  A* grad_value;  // `parts` copies of the N * S * M * C gradient
  T* grad_loc;
  T* grad_attn;
  int64_t parts;
};

// The gradients of row r = (n, q, m); `value` and `grad_value` point at image n, head m.
template <typename T, typename A>
DN_ALWAYS_INLINE void backward_row(const Inputs<T>& in, const Grads<T, A>& gr, int64_t r, const T* value,
                                   A* grad_value, A* grad_row) {
  const MsdaGeometry& g = in.g;
  const int64_t channels = g.channels, stride = g.pixel_stride(), samples = g.samples();
  const T* go = gr.grad_out + r * channels;
  for (int64_t c = 0; c < channels; ++c) grad_row[c] = static_cast<A>(go[c]);
  const T* loc = in.loc + r * samples * 2;
  const T* attn = in.attn + r * samples;
  T* grad_loc = gr.grad_loc + r * samples * 2;
  T* grad_attn = gr.grad_attn + r * samples;
  for (int64_t l = 0; l < g.levels; ++l) {
    const Level lv = in.levels[l];
    const T* base = value + lv.start * stride;
    A* grad_base = grad_value + lv.start * stride;
    for (int64_t p = 0; p < g.points; ++p, loc += 2, ++attn, grad_loc += 2, ++grad_attn) {
      const A x = static_cast<A>(loc[0]), y = static_cast<A>(loc[1]);
      const A px = x * A(lv.width) - A(0.5), py = y * A(lv.height) - A(0.5);
      if (!sample_inside(py, px, lv.height, lv.width)) {
        grad_loc[0] = grad_loc[1] = *grad_attn = T(0);
        continue;
      }
      const BilinearSample<A> s = msda_sample<A>(x, y, lv.height, lv.width);
      const BilinearGrad<A> ds = msda_sample_grad<A>(x, y, lv.height, lv.width);
      const int64_t corner[4] = {0, s.dx * stride, s.dy * stride, (s.dx + s.dy) * stride};
      const T* v = base + s.offset * stride;
      A dot[4];
      dot4<T, A>(grad_row, v, v + corner[1], v + corner[2], v + corner[3], channels, dot);
      const A w = static_cast<A>(*attn);
      A ga = 0, gx = 0, gy = 0;
      for (int k = 0; k < 4; ++k) {
        ga += s.w[k] * dot[k];
        gx += ds.gx[k] * dot[k];
        gy += ds.gy[k] * dot[k];
      }
      *grad_attn = static_cast<T>(ga);
      grad_loc[0] = static_cast<T>(w * gx);
      grad_loc[1] = static_cast<T>(w * gy);
      A* gv = grad_base + s.offset * stride;
      for (int k = 0; k < 4; ++k)
        if (s.w[k] != A(0)) axpy<A>(gv + corner[k], grad_row, w * s.w[k], channels);
    }
  }
}

// Work items [begin, end) of the backward: item i = ((n * M + m) * parts + k) owns the
// k-th part of the queries of image n and head m, and the k-th copy of grad_value.
template <typename T, typename A>
DN_ALWAYS_INLINE void backward_items(const Inputs<T>& in, const Grads<T, A>& gr, int64_t begin, int64_t end) {
  const MsdaGeometry& g = in.g;
  const int64_t stride = g.pixel_stride(), copy = g.batch * g.pixels * stride;
  std::vector<A> grad_row(g.channels);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t k = i % gr.parts, pair = i / gr.parts, n = pair / g.heads, m = pair % g.heads;
    const int64_t q0 = g.queries * k / gr.parts, q1 = g.queries * (k + 1) / gr.parts;
    const int64_t image = n * g.pixels * stride + m * g.channels;
    for (int64_t q = q0; q < q1; ++q)
      backward_row<T, A>(in, gr, (n * g.queries + q) * g.heads + m, in.value + image,
                         gr.grad_value + k * copy + image, grad_row.data());
  }
}

#if DN_X86_DISPATCH
DN_TARGET_AVX void forward_rows_avx(const Inputs<float>& in, float* out, int64_t begin, int64_t end) {
  forward_rows<float, float>(in, out, begin, end);
}
DN_TARGET_AVX void backward_items_avx(const Inputs<float>& in, const Grads<float, float>& gr, int64_t begin,
                                      int64_t end) {
  backward_items<float, float>(in, gr, begin, end);
}
#endif

template <typename T, typename A>
void run_forward(const Inputs<T>& in, T* out, int64_t begin, int64_t end) {
#if DN_X86_DISPATCH
  if constexpr (std::is_same_v<T, float>) {
    if (have_avx_fma()) return forward_rows_avx(in, out, begin, end);
  }
#endif
  forward_rows<T, A>(in, out, begin, end);
}

template <typename T, typename A>
void run_backward(const Inputs<T>& in, const Grads<T, A>& gr, int64_t begin, int64_t end) {
#if DN_X86_DISPATCH
  if constexpr (std::is_same_v<T, float>) {
    if (have_avx_fma()) return backward_items_avx(in, gr, begin, end);
  }
#endif
  backward_items<T, A>(in, gr, begin, end);
}

// Rows per parallel task: enough channel-samples that waking a thread pays off.
int64_t row_grain(const MsdaGeometry& g) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, g.samples() * g.channels));
}

// Query parts K per (n, m) pair: 1 when the pairs spread evenly over the threads (or are
// many), else enough that pairs * K is a multiple of the threads (at most 8 copies of
// grad_value, at most one part per query).
int64_t query_parts(const MsdaGeometry& g) {
  const int64_t pairs = g.batch * g.heads, threads = std::max<int64_t>(1, at::get_num_threads());
  if (pairs % threads == 0 || pairs >= 4 * threads) return 1;
  const int64_t parts = threads / std::gcd(pairs, threads);
  return std::max<int64_t>(1, std::min<int64_t>({parts, int64_t(8), g.queries}));
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights) {
  const MsdaGeometry g =
      make_msda_geometry(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const std::vector<Level> levels = level_table(spatial_shapes, level_start_index, g.pixels);
  const at::Tensor v = value.contiguous(), loc = sampling_locations.contiguous(), attn = attention_weights.contiguous();
  at::Tensor out = at::empty({g.batch, g.queries, g.heads * g.channels}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    const Inputs<scalar_t> in{v.data_ptr<scalar_t>(), loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                              levels.data(), g};
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, g.rows(), row_grain(g),
                     [&](int64_t begin, int64_t end) { run_forward<scalar_t, A>(in, o, begin, end); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const MsdaGeometry g =
      make_msda_geometry(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == g.batch && grad_output.size(1) == g.queries &&
                  grad_output.size(2) == g.heads * g.channels && grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn_backward: grad_output must be (", g.batch, ", ", g.queries, ", ", g.heads * g.channels,
              ") of value's dtype, got ", grad_output.sizes(), " ", grad_output.scalar_type());
  const std::vector<Level> levels = level_table(spatial_shapes, level_start_index, g.pixels);
  const at::Tensor go = grad_output.contiguous(), v = value.contiguous(), loc = sampling_locations.contiguous(),
                   attn = attention_weights.contiguous();
  at::Tensor grad_value = at::zeros(value.sizes(), value.options());
  at::Tensor grad_loc = at::zeros(loc.sizes(), loc.options()), grad_attn = at::zeros(attn.sizes(), attn.options());
  if (g.rows() == 0) return {grad_value, grad_loc, grad_attn};
  const int64_t parts = query_parts(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    constexpr bool same = std::is_same_v<scalar_t, A>;
    at::Tensor buffer = (same && parts == 1)
                            ? grad_value
                            : at::zeros({parts, g.batch, g.pixels, g.heads, g.channels},
                                        value.options().dtype(c10::CppTypeToScalarType<A>::value));
    const Inputs<scalar_t> in{v.data_ptr<scalar_t>(), loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                              levels.data(), g};
    const Grads<scalar_t, A> gr{go.data_ptr<scalar_t>(), buffer.data_ptr<A>(), grad_loc.data_ptr<scalar_t>(),
                                grad_attn.data_ptr<scalar_t>(), parts};
    at::parallel_for(0, g.batch * g.heads * parts, 1,
                     [&](int64_t begin, int64_t end) { run_backward<scalar_t, A>(in, gr, begin, end); });
    if (!(same && parts == 1)) grad_value = (parts == 1 ? buffer[0] : buffer.sum(0)).to(value.scalar_type());
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(densenets, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace densenets
