// CPU kernels of densenets::deform_conv2d and its backward.
//
// Output positions of the whole batch are processed in chunks of L columns (bounded
// memory for any batch size). Per chunk:
//   1. a table of bilinear samples, one per (deformable group, kernel point, column),
//      shared by every channel of the group;
//   2. the column buffer (C * K, L), filled in parallel over rows;
//   3. one GEMM per weight group: out (C_out, L) = W (C_out, C * K) @ columns.
// Backward per chunk: grad_columns = W^T @ grad_out (GEMM); grad_weight += grad_out @
// columns^T (GEMM, columns refilled); grad_input scattered in parallel over input
// channels (each thread owns its channels, so no atomics); grad_offset and grad_mask in
// parallel over (group, kernel point, block of columns), channels summed inside.
// float16/bfloat16 inputs are computed in float32 and converted back. Layers with at least
// 8 channels per (deformable or weight) group run the forward channels-last instead
// (cpu/deform_conv2d_nhwc_cpu.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "deform_conv2d.h"

namespace densenets {
namespace {

// Elements of the column buffer of one chunk (64 MiB in float32).
constexpr int64_t kColumnBudget = int64_t(1) << 24;
// Columns per block: a block's samples (K * kBlock table entries) stay in cache.
constexpr int64_t kBlock = 128;
// Samples a parallel task should at least process: smaller layers run on one thread,
// where waking the others would cost more than it saves.
constexpr int64_t kMinTaskSamples = int64_t(1) << 15;

// Grain size (tasks per chunk of work) for tasks of `samples` samples each.
int64_t grain_for(int64_t samples) { return std::max<int64_t>(1, kMinTaskSamples / std::max<int64_t>(1, samples)); }

// Chunk length: whole images when a few fit the budget, so that the GEMM can read and
// write the output of a single image in place.
int64_t chunk_length(const DeformGeometry& g) {
  const int64_t l = chunk_columns(g, column_budget(kColumnBudget)), p = g.positions();
  return l >= p ? (l / p) * p : l;
}

// Calls f(n, p, count, l) for each run of `count` columns of image n, starting at its
// position p and at column l of the chunk [q0, q0 + len).
template <typename F>
void for_each_image_run(int64_t q0, int64_t len, int64_t positions, const F& f) {
  for (int64_t q = q0; q < q0 + len;) {
    const int64_t n = q / positions, p = q % positions;
    const int64_t count = std::min(q0 + len - q, positions - p);
    f(n, p, count, q - q0);
    q += count;
  }
}

// The output (or grad_output) of one chunk as a (C_out, len) matrix: the image's own
// memory when the chunk is exactly one image, else `buffer`.
at::Tensor chunk_view(const at::Tensor& out3, const at::Tensor& buffer, int64_t q0, int64_t len) {
  const int64_t positions = out3.size(2);
  if (len == positions && q0 % positions == 0) return out3.select(0, q0 / positions);
  return buffer.view(-1).narrow(0, 0, out3.size(1) * len).view({out3.size(1), len});
}

template <typename T>
struct Inputs {
  const T* input;
  const T* offset;
  const T* mask;  // nullptr for DCNv1
};

// Sampling position of column q0 + l for kernel point k of deformable group d.
template <typename T>
inline void sample_position(const DeformGeometry& g, const Inputs<T>& in, int64_t q, int64_t d, int64_t k,
                            T& y, T& x, int64_t& n, int64_t& p) {
  const int64_t positions = g.positions();
  n = q / positions;
  p = q % positions;
  const int64_t oi = offset_index(g, n, p, d, k);
  y = T(grid_y(g, p / g.out_w, k / g.kernel_w)) + in.offset[oi];
  x = T(grid_x(g, p % g.out_w, k % g.kernel_w)) + in.offset[oi + positions];
}

// table[(d * K + k) * len + l]: sample of column q0 + l, offset relative to channel 0 of
// the image, weights multiplied by the mask.
template <typename T>
void build_samples(const DeformGeometry& g, const Inputs<T>& in, int64_t q0, int64_t len,
                   BilinearSample<T>* table) {
  const int64_t points = g.points(), image = g.channels * g.plane();
  at::parallel_for(0, g.deform_groups * points * len, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t l = t % len, k = (t / len) % points, d = t / (len * points);
      T y, x;
      int64_t n, p;
      sample_position(g, in, q0 + l, d, k, y, x, n, p);
      BilinearSample<T> s = bilinear_sample(y, x, g.height, g.width);
      s.offset += n * image;
      if (in.mask != nullptr) {
        const T m = in.mask[mask_index(g, n, p, d, k)];
        for (int i = 0; i < 4; ++i) s.w[i] *= m;
      }
      table[t] = s;
    }
  });
}

// columns[(c * K + k) * len + l] = masked bilinear sample of channel c. Tasks are
// (block of columns, channel) pairs: a block's samples stay in cache across channels and
// a channel's plane across kernel points.
template <typename T>
void fill_columns(const DeformGeometry& g, const T* input, const BilinearSample<T>* table, int64_t len,
                  T* columns) {
  const int64_t points = g.points(), per_group = g.channels / g.deform_groups, plane = g.plane();
  const int64_t blocks = (len + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks * g.channels, grain_for(points * kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c = t % g.channels, l0 = (t / g.channels) * kBlock, count = std::min(kBlock, len - l0);
      const T* src = input + c * plane;
      for (int64_t k = 0; k < points; ++k) {
        const BilinearSample<T>* s = table + ((c / per_group) * points + k) * len + l0;
        T* dst = columns + (c * points + k) * len + l0;
        for (int64_t i = 0; i < count; ++i) {
          const T* v = src + s[i].offset;
          const int64_t dx = s[i].dx, dy = s[i].dy;
          dst[i] = s[i].w[0] * v[0] + s[i].w[1] * v[dx] + s[i].w[2] * v[dy] + s[i].w[3] * v[dy + dx];
        }
      }
    }
  });
}

// grad_input += transpose of the sampling. Each thread owns a range of input channels
// (no atomics) and walks the chunk block by block.
template <typename T>
void scatter_input_grad(const DeformGeometry& g, const T* grad_columns, const BilinearSample<T>* table,
                        int64_t len, T* grad_input) {
  const int64_t points = g.points(), per_group = g.channels / g.deform_groups, plane = g.plane();
  at::parallel_for(0, g.channels, grain_for(points * len), [&](int64_t c_begin, int64_t c_end) {
    for (int64_t l0 = 0; l0 < len; l0 += kBlock) {
      const int64_t count = std::min(kBlock, len - l0);
      for (int64_t c = c_begin; c < c_end; ++c) {
        T* dst = grad_input + c * plane;
        for (int64_t k = 0; k < points; ++k) {
          const BilinearSample<T>* s = table + ((c / per_group) * points + k) * len + l0;
          const T* gc = grad_columns + (c * points + k) * len + l0;
          for (int64_t i = 0; i < count; ++i) {
            T* v = dst + s[i].offset;
            const int64_t dx = s[i].dx, dy = s[i].dy;
            const T grad = gc[i];
            v[0] += s[i].w[0] * grad;
            v[dx] += s[i].w[1] * grad;
            v[dy] += s[i].w[2] * grad;
            v[dy + dx] += s[i].w[3] * grad;
          }
        }
      }
    }
  });
}

// grad_offset and grad_mask of the chunk, one task per (deformable group, block of
// columns). For each sample, corner[j] = sum over the group's channels of grad_column *
// value at corner j; the gradients are dot products of these four sums with the weight
// derivatives (offset) or the weights (mask).
template <typename T>
void offset_mask_grad(const DeformGeometry& g, const Inputs<T>& in, const T* grad_columns,
                      const BilinearSample<T>* table, int64_t q0, int64_t len, T* grad_offset, T* grad_mask) {
  const int64_t points = g.points(), per_group = g.channels / g.deform_groups, plane = g.plane();
  const int64_t positions = g.positions(), blocks = (len + kBlock - 1) / kBlock;
  const int64_t grain = grain_for(per_group * points * kBlock);
  at::parallel_for(0, g.deform_groups * blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> corner(points * kBlock * 4);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t d = t / blocks, l0 = (t % blocks) * kBlock, count = std::min(kBlock, len - l0);
      std::fill(corner.begin(), corner.end(), T(0));
      for (int64_t c = d * per_group; c < (d + 1) * per_group; ++c) {
        const T* src = in.input + c * plane;
        for (int64_t k = 0; k < points; ++k) {
          const BilinearSample<T>* s = table + (d * points + k) * len + l0;
          const T* gc = grad_columns + (c * points + k) * len + l0;
          T* acc = corner.data() + k * kBlock * 4;
          for (int64_t i = 0; i < count; ++i) {
            const T* v = src + s[i].offset;
            const int64_t dx = s[i].dx, dy = s[i].dy;
            const T grad = gc[i];
            acc[4 * i] += grad * v[0];
            acc[4 * i + 1] += grad * v[dx];
            acc[4 * i + 2] += grad * v[dy];
            acc[4 * i + 3] += grad * v[dy + dx];
          }
        }
      }
      for (int64_t k = 0; k < points; ++k) {
        for (int64_t i = 0; i < count; ++i) {
          T y, x;
          int64_t n, p;
          sample_position(g, in, q0 + l0 + i, d, k, y, x, n, p);
          const BilinearSample<T> s = bilinear_sample(y, x, g.height, g.width);
          const BilinearGrad<T> dg = bilinear_grad(y, x, g.height, g.width);
          const T* acc = corner.data() + (k * kBlock + i) * 4;
          T gy = 0, gx = 0, gm = 0;
          for (int j = 0; j < 4; ++j) {
            gy += dg.gy[j] * acc[j];
            gx += dg.gx[j] * acc[j];
            gm += s.w[j] * acc[j];
          }
          const T m = in.mask != nullptr ? in.mask[mask_index(g, n, p, d, k)] : T(1);
          const int64_t oi = offset_index(g, n, p, d, k);
          grad_offset[oi] = m * gy;
          grad_offset[oi + positions] = m * gx;
          if (grad_mask != nullptr) grad_mask[mask_index(g, n, p, d, k)] = gm;
        }
      }
    }
  });
}

// Per-weight-group views: W as (G, C_out / G, C / G * K).
at::Tensor group_view(const at::Tensor& weight, int64_t groups) { return weight.reshape({groups, weight.size(0) / groups, -1}); }

template <typename T>
void forward_impl(const DeformGeometry& g, const Inputs<T>& in, const at::Tensor& weight, at::Tensor& output) {
  const int64_t len_max = chunk_length(g), groups = g.groups;
  const int64_t out_per_group = g.out_channels / groups, rows_per_group = g.rows() / groups;
  at::Tensor columns = at::empty({g.rows() * len_max}, weight.options());
  at::Tensor buffer = at::empty({g.out_channels * len_max}, weight.options());
  std::vector<BilinearSample<T>> table(g.deform_groups * g.points() * len_max);
  const at::Tensor w = group_view(weight, groups);
  at::Tensor out3 = output.view({g.batch, g.out_channels, g.positions()});
  for (int64_t q0 = 0; q0 < g.columns(); q0 += len_max) {
    const int64_t len = std::min(len_max, g.columns() - q0);
    build_samples(g, in, q0, len, table.data());
    fill_columns(g, in.input, table.data(), len, columns.data_ptr<T>());
    const at::Tensor cols = columns.narrow(0, 0, g.rows() * len).view({g.rows(), len});
    at::Tensor out = chunk_view(out3, buffer, q0, len);
    for (int64_t gi = 0; gi < groups; ++gi) {
      at::Tensor o = out.narrow(0, gi * out_per_group, out_per_group);
      at::mm_out(o, w[gi], cols.narrow(0, gi * rows_per_group, rows_per_group));
    }
    if (out.data_ptr() == buffer.data_ptr()) {
      for_each_image_run(q0, len, g.positions(), [&](int64_t n, int64_t p, int64_t count, int64_t l) {
        out3.select(0, n).narrow(1, p, count).copy_(out.narrow(1, l, count));
      });
    }
  }
}

template <typename T>
void backward_impl(const DeformGeometry& g, const Inputs<T>& in, const at::Tensor& grad_output,
                   const at::Tensor& weight, at::Tensor& grad_input, at::Tensor& grad_offset,
                   at::Tensor& grad_weight, at::Tensor& grad_mask) {
  const int64_t len_max = chunk_length(g), groups = g.groups;
  const int64_t out_per_group = g.out_channels / groups, rows_per_group = g.rows() / groups;
  at::Tensor columns = at::empty({g.rows() * len_max}, weight.options());
  at::Tensor grad_columns = at::empty({g.rows() * len_max}, weight.options());
  at::Tensor buffer = at::empty({g.out_channels * len_max}, weight.options());
  std::vector<BilinearSample<T>> table(g.deform_groups * g.points() * len_max);
  const at::Tensor w = group_view(weight, groups);
  at::Tensor gw = group_view(grad_weight, groups);
  const at::Tensor go3 = grad_output.view({g.batch, g.out_channels, g.positions()});
  T* grad_mask_ptr = in.mask != nullptr ? grad_mask.data_ptr<T>() : nullptr;
  for (int64_t q0 = 0; q0 < g.columns(); q0 += len_max) {
    const int64_t len = std::min(len_max, g.columns() - q0);
    build_samples(g, in, q0, len, table.data());
    at::Tensor go = chunk_view(go3, buffer, q0, len);
    if (go.data_ptr() == buffer.data_ptr()) {
      for_each_image_run(q0, len, g.positions(), [&](int64_t n, int64_t p, int64_t count, int64_t l) {
        go.narrow(1, l, count).copy_(go3.select(0, n).narrow(1, p, count));
      });
    }
    at::Tensor gcols = grad_columns.narrow(0, 0, g.rows() * len).view({g.rows(), len});
    at::Tensor cols = columns.narrow(0, 0, g.rows() * len).view({g.rows(), len});
    fill_columns(g, in.input, table.data(), len, cols.data_ptr<T>());
    for (int64_t gi = 0; gi < groups; ++gi) {
      const at::Tensor go_g = go.narrow(0, gi * out_per_group, out_per_group);
      at::Tensor gc_g = gcols.narrow(0, gi * rows_per_group, rows_per_group);
      at::mm_out(gc_g, w[gi].t(), go_g);
      gw[gi].addmm_(go_g, cols.narrow(0, gi * rows_per_group, rows_per_group).t());
    }
    scatter_input_grad(g, gcols.data_ptr<T>(), table.data(), len, grad_input.data_ptr<T>());
    offset_mask_grad(g, in, gcols.data_ptr<T>(), table.data(), q0, len, grad_offset.data_ptr<T>(), grad_mask_ptr);
  }
}

bool reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

std::optional<at::Tensor> to_float(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                             const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& bias,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                             int64_t dilation_h, int64_t dilation_w) {
  const DeformGeometry g =
      make_geometry(input, offset, weight, mask, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w);
  if (reduced_precision(input)) {
    return deform_conv2d_cpu(input.to(at::kFloat), offset.to(at::kFloat), weight.to(at::kFloat),
                             to_float(mask), to_float(bias), stride_h, stride_w, pad_h, pad_w, dilation_h,
                             dilation_w)
        .to(input.scalar_type());
  }
  if (nhwc_forward_suits(g)) return deform_conv2d_forward_nhwc_cpu(g, input, offset, weight, mask, bias);
  const at::Tensor x = input.contiguous(), off = offset.contiguous(), w = weight.contiguous();
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_cpu", [&] {
    const Inputs<scalar_t> in{x.data_ptr<scalar_t>(), off.data_ptr<scalar_t>(),
                              m.defined() ? m.data_ptr<scalar_t>() : nullptr};
    forward_impl<scalar_t>(g, in, w, output);
  });
  if (bias.has_value()) output.add_(bias->view({1, g.out_channels, 1, 1}));
  return channels_last_output(input) ? output.contiguous(at::MemoryFormat::ChannelsLast) : output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    const std::optional<at::Tensor>& mask, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dilation_h, int64_t dilation_w) {
  const DeformGeometry g =
      make_geometry(input, offset, weight, mask, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.batch, g.out_channels, g.out_h, g.out_w}),
              "deform_conv2d_backward: grad_output shape ", grad_output.sizes(), " does not match the output");
  if (reduced_precision(input)) {
    auto grads = deform_conv2d_backward_cpu(grad_output.to(at::kFloat), input.to(at::kFloat),
                                            offset.to(at::kFloat), weight.to(at::kFloat), to_float(mask),
                                            stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w);
    const auto type = input.scalar_type();
    return {std::get<0>(grads).to(type), std::get<1>(grads).to(type), std::get<2>(grads).to(type),
            std::get<3>(grads).to(type), std::get<4>(grads).to(type)};
  }
  const at::Tensor go = grad_output.contiguous().to(input.scalar_type());
  const at::Tensor x = input.contiguous(), off = offset.contiguous(), w = weight.contiguous();
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  at::Tensor grad_input = at::zeros_like(x);
  at::Tensor grad_offset = at::empty_like(off);
  at::Tensor grad_weight = at::zeros_like(w);
  at::Tensor grad_mask = m.defined() ? at::empty_like(m) : at::empty({0}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_backward_cpu", [&] {
    const Inputs<scalar_t> in{x.data_ptr<scalar_t>(), off.data_ptr<scalar_t>(),
                              m.defined() ? m.data_ptr<scalar_t>() : nullptr};
    backward_impl<scalar_t>(g, in, go, w, grad_input, grad_offset, grad_weight, grad_mask);
  });
  at::Tensor grad_bias = go.sum({0, 2, 3});
  return {grad_input, grad_offset, grad_weight, grad_mask, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(densenets, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_cpu);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace densenets
