// CUDA kernels of densenets::deform_conv2d and its backward.
//
// Same chunked structure as the CPU kernel (cpu/deform_conv2d_cpu.cpp): per chunk of L
// output columns, sample into a (C * K, L) column buffer and multiply by the weights
// with cuBLAS. The chunk is sized so that the column buffer never exceeds the output's
// size (within [2^22, 2^28] elements), whatever the batch size.
// float16/bfloat16 sample and reduce in float32 (at::opmath_type); cuBLAS accumulates
// in float32; grad_input and grad_weight are accumulated in float32 buffers.
// Every launch goes to the current stream; indices are 64-bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "deform_conv2d.h"

namespace densenets {
namespace {

constexpr int kThreads = 256;
// Channels handled by one thread in the fill and scatter kernels (grid y covers the rest).
constexpr int64_t kChannelSlice = 16;
constexpr int64_t kMinBudget = int64_t(1) << 22;
constexpr int64_t kMaxBudget = int64_t(1) << 28;

int64_t chunk_length(const DeformGeometry& g) {
  const int64_t output = g.batch * g.out_channels * g.positions();
  return chunk_columns(g, column_budget(std::clamp(output, kMinBudget, kMaxBudget)));
}

dim3 grid_for(int64_t samples, int64_t channel_slices) {
  return dim3(static_cast<unsigned>((samples + kThreads - 1) / kThreads), static_cast<unsigned>(channel_slices));
}

// The sample of column q for kernel point k of deformable group d (mask not applied).
template <typename T, typename Acc>
__device__ __forceinline__ BilinearSample<Acc> column_sample(const DeformGeometry& g, const T* offset, int64_t n,
                                                             int64_t p, int64_t d, int64_t k, Acc& y, Acc& x) {
  const int64_t oi = offset_index(g, n, p, d, k);
  y = static_cast<Acc>(grid_y(g, p / g.out_w, k / g.kernel_w)) + static_cast<Acc>(offset[oi]);
  x = static_cast<Acc>(grid_x(g, p % g.out_w, k % g.kernel_w)) + static_cast<Acc>(offset[oi + g.positions()]);
  return bilinear_sample(y, x, g.height, g.width);
}

// One thread per (d, k, l) and slice of the group's channels:
// columns[(c * K + k) * len + l] = mask * bilinear sample of channel c.
template <typename T>
__global__ void fill_columns_kernel(DeformGeometry g, const T* __restrict__ input, const T* __restrict__ offset,
                                    const T* __restrict__ mask, int64_t q0, int64_t len, T* __restrict__ columns) {
  using Acc = at::opmath_type<T>;
  const int64_t points = g.points(), per_group = g.channels / g.deform_groups;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= g.deform_groups * points * len) return;
  const int64_t l = t % len, k = (t / len) % points, d = t / (len * points);
  const int64_t c_begin = d * per_group + blockIdx.y * kChannelSlice;
  const int64_t c_end = std::min(c_begin + kChannelSlice, (d + 1) * per_group);
  if (c_begin >= c_end) return;
  const int64_t q = q0 + l, n = q / g.positions(), p = q % g.positions();
  Acc y, x;
  const BilinearSample<Acc> s = column_sample(g, offset, n, p, d, k, y, x);
  const Acc m = mask != nullptr ? static_cast<Acc>(mask[mask_index(g, n, p, d, k)]) : Acc(1);
  const int64_t dx = s.dx, dy = s.dy;
  for (int64_t c = c_begin; c < c_end; ++c) {
    const T* v = input + (n * g.channels + c) * g.plane() + s.offset;
    const Acc value = s.w[0] * static_cast<Acc>(v[0]) + s.w[1] * static_cast<Acc>(v[dx]) +
                      s.w[2] * static_cast<Acc>(v[dy]) + s.w[3] * static_cast<Acc>(v[dy + dx]);
    columns[(c * points + k) * len + l] = static_cast<T>(m * value);
  }
}

// Transpose of the fill: grad_input += mask * weight * grad_columns, with atomics
// (several samples share a pixel). `grad_input` is float32 for float16/bfloat16.
template <typename T, typename Acc>
__global__ void scatter_input_grad_kernel(DeformGeometry g, const T* __restrict__ grad_columns,
                                          const T* __restrict__ offset, const T* __restrict__ mask, int64_t q0,
                                          int64_t len, Acc* __restrict__ grad_input) {
  const int64_t points = g.points(), per_group = g.channels / g.deform_groups;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= g.deform_groups * points * len) return;
  const int64_t l = t % len, k = (t / len) % points, d = t / (len * points);
  const int64_t c_begin = d * per_group + blockIdx.y * kChannelSlice;
  const int64_t c_end = std::min(c_begin + kChannelSlice, (d + 1) * per_group);
  if (c_begin >= c_end) return;
  const int64_t q = q0 + l, n = q / g.positions(), p = q % g.positions();
  Acc y, x;
  const BilinearSample<Acc> s = column_sample(g, offset, n, p, d, k, y, x);
  if (s.w[0] == Acc(0) && s.w[1] == Acc(0) && s.w[2] == Acc(0) && s.w[3] == Acc(0)) return;
  const Acc m = mask != nullptr ? static_cast<Acc>(mask[mask_index(g, n, p, d, k)]) : Acc(1);
  const int64_t corner[4] = {0, s.dx, s.dy, static_cast<int64_t>(s.dy) + s.dx};
  for (int64_t c = c_begin; c < c_end; ++c) {
    const Acc grad = m * static_cast<Acc>(grad_columns[(c * points + k) * len + l]);
    Acc* dst = grad_input + (n * g.channels + c) * g.plane() + s.offset;
    for (int i = 0; i < 4; ++i) {
      if (s.w[i] != Acc(0)) gpuAtomicAdd(dst + corner[i], s.w[i] * grad);
    }
  }
}

// One thread per (d, k, l): sums grad_column * corner value over the group's channels,
// then grad_offset = mask * (weight derivatives . sums), grad_mask = weights . sums.
template <typename T>
__global__ void offset_mask_grad_kernel(DeformGeometry g, const T* __restrict__ input,
                                        const T* __restrict__ grad_columns, const T* __restrict__ offset,
                                        const T* __restrict__ mask, int64_t q0, int64_t len,
                                        T* __restrict__ grad_offset, T* __restrict__ grad_mask) {
  using Acc = at::opmath_type<T>;
  const int64_t points = g.points(), per_group = g.channels / g.deform_groups;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= g.deform_groups * points * len) return;
  const int64_t l = t % len, k = (t / len) % points, d = t / (len * points);
  const int64_t q = q0 + l, n = q / g.positions(), p = q % g.positions();
  Acc y, x;
  const BilinearSample<Acc> s = column_sample(g, offset, n, p, d, k, y, x);
  const int64_t dx = s.dx, dy = s.dy;
  Acc corner[4] = {Acc(0), Acc(0), Acc(0), Acc(0)};
  for (int64_t c = d * per_group; c < (d + 1) * per_group; ++c) {
    const T* v = input + (n * g.channels + c) * g.plane() + s.offset;
    const Acc grad = static_cast<Acc>(grad_columns[(c * points + k) * len + l]);
    corner[0] += grad * static_cast<Acc>(v[0]);
    corner[1] += grad * static_cast<Acc>(v[dx]);
    corner[2] += grad * static_cast<Acc>(v[dy]);
    corner[3] += grad * static_cast<Acc>(v[dy + dx]);
  }
  const BilinearGrad<Acc> dg = bilinear_grad(y, x, g.height, g.width);
  Acc gy = 0, gx = 0, gm = 0;
  for (int j = 0; j < 4; ++j) {
    gy += dg.gy[j] * corner[j];
    gx += dg.gx[j] * corner[j];
    gm += s.w[j] * corner[j];
  }
  const Acc m = mask != nullptr ? static_cast<Acc>(mask[mask_index(g, n, p, d, k)]) : Acc(1);
  const int64_t oi = offset_index(g, n, p, d, k);
  grad_offset[oi] = static_cast<T>(m * gy);
  grad_offset[oi + g.positions()] = static_cast<T>(m * gx);
  if (mask != nullptr) grad_mask[mask_index(g, n, p, d, k)] = static_cast<T>(gm);
}

// The (C_out, len) matrix of a chunk: the image's own memory when the chunk is exactly
// one image, else the first C_out * len elements of `buffer`.
at::Tensor chunk_view(const at::Tensor& out3, const at::Tensor& buffer, int64_t q0, int64_t len) {
  const int64_t positions = out3.size(2);
  if (len == positions && q0 % positions == 0) return out3.select(0, q0 / positions);
  return buffer.view(-1).narrow(0, 0, out3.size(1) * len).view({out3.size(1), len});
}

// Copies between a chunk matrix and the (N, C_out, P) tensor, image run by image run.
void copy_chunk(const at::Tensor& out3, const at::Tensor& chunk, int64_t q0, int64_t len, bool to_chunk) {
  const int64_t positions = out3.size(2);
  for (int64_t q = q0; q < q0 + len;) {
    const int64_t n = q / positions, p = q % positions, count = std::min(q0 + len - q, positions - p);
    at::Tensor a = out3.select(0, n).narrow(1, p, count), b = chunk.narrow(1, q - q0, count);
    to_chunk ? b.copy_(a) : a.copy_(b);
    q += count;
  }
}

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

at::Tensor deform_conv2d_cuda(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& weight_,
                              const std::optional<at::Tensor>& mask_, const std::optional<at::Tensor>& bias,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t dilation_h, int64_t dilation_w) {
  const DeformGeometry g =
      make_geometry(input_, offset_, weight_, mask_, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), weight = weight_.contiguous();
  const std::optional<at::Tensor> mask = contiguous(mask_);
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  const int64_t len_max = chunk_length(g), groups = g.groups;
  const int64_t out_per_group = g.out_channels / groups, rows_per_group = g.rows() / groups;
  at::Tensor columns = at::empty({g.rows() * len_max}, input.options());
  at::Tensor buffer = at::empty({g.out_channels * len_max}, input.options());
  const at::Tensor w = weight.reshape({groups, out_per_group, rows_per_group});
  at::Tensor out3 = output.view({g.batch, g.out_channels, g.positions()});
  const int64_t slices = (g.channels / g.deform_groups + kChannelSlice - 1) / kChannelSlice;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int64_t q0 = 0; q0 < g.columns(); q0 += len_max) {
    const int64_t len = std::min(len_max, g.columns() - q0);
    at::Tensor cols = columns.narrow(0, 0, g.rows() * len).view({g.rows(), len});
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_cuda", [&] {
      fill_columns_kernel<scalar_t><<<grid_for(g.deform_groups * g.points() * len, slices), kThreads, 0, stream>>>(
          g, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(mask), q0, len,
          cols.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    at::Tensor out = chunk_view(out3, buffer, q0, len);
    for (int64_t gi = 0; gi < groups; ++gi) {
      at::Tensor o = out.narrow(0, gi * out_per_group, out_per_group);
      at::mm_out(o, w[gi], cols.narrow(0, gi * rows_per_group, rows_per_group));
    }
    if (out.data_ptr() == buffer.data_ptr()) copy_chunk(out3, out, q0, len, /*to_chunk=*/false);
  }
  if (bias.has_value()) output.add_(bias->view({1, g.out_channels, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& weight_,
    const std::optional<at::Tensor>& mask_, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dilation_h, int64_t dilation_w) {
  const DeformGeometry g =
      make_geometry(input_, offset_, weight_, mask_, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w);
  TORCH_CHECK(grad_output_.sizes() == at::IntArrayRef({g.batch, g.out_channels, g.out_h, g.out_w}),
              "deform_conv2d_backward: grad_output shape ", grad_output_.sizes(), " does not match the output");
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), weight = weight_.contiguous();
  const at::Tensor grad_output = grad_output_.contiguous().to(input.scalar_type());
  const std::optional<at::Tensor> mask = contiguous(mask_);
  const bool reduced = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  const auto acc_options = input.options().dtype(reduced ? at::kFloat : input.scalar_type());
  at::Tensor grad_input = at::zeros(input.sizes(), acc_options);
  at::Tensor grad_weight = at::zeros(weight.sizes(), acc_options);
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = mask.has_value() ? at::empty_like(*mask) : at::empty({0}, input.options());
  const int64_t len_max = chunk_length(g), groups = g.groups;
  const int64_t out_per_group = g.out_channels / groups, rows_per_group = g.rows() / groups;
  at::Tensor columns = at::empty({g.rows() * len_max}, input.options());
  at::Tensor grad_columns = at::empty({g.rows() * len_max}, input.options());
  at::Tensor buffer = at::empty({g.out_channels * len_max}, input.options());
  const at::Tensor w = weight.reshape({groups, out_per_group, rows_per_group});
  at::Tensor gw = grad_weight.view({groups, out_per_group, rows_per_group});
  const at::Tensor go3 = grad_output.view({g.batch, g.out_channels, g.positions()});
  const int64_t slices = (g.channels / g.deform_groups + kChannelSlice - 1) / kChannelSlice;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int64_t q0 = 0; q0 < g.columns(); q0 += len_max) {
    const int64_t len = std::min(len_max, g.columns() - q0);
    at::Tensor go = chunk_view(go3, buffer, q0, len);
    if (go.data_ptr() == buffer.data_ptr()) copy_chunk(go3, go, q0, len, /*to_chunk=*/true);
    at::Tensor cols = columns.narrow(0, 0, g.rows() * len).view({g.rows(), len});
    at::Tensor gcols = grad_columns.narrow(0, 0, g.rows() * len).view({g.rows(), len});
    const dim3 grid = grid_for(g.deform_groups * g.points() * len, slices);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_fill", [&] {
      fill_columns_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
          g, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(mask), q0, len,
          cols.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    for (int64_t gi = 0; gi < groups; ++gi) {
      const at::Tensor go_g = go.narrow(0, gi * out_per_group, out_per_group);
      const at::Tensor cols_g = cols.narrow(0, gi * rows_per_group, rows_per_group);
      at::Tensor gc_g = gcols.narrow(0, gi * rows_per_group, rows_per_group);
      at::mm_out(gc_g, w[gi].t(), go_g);
      if (reduced) {
        gw[gi].add_(at::mm(go_g, cols_g.t()));
      } else {
        gw[gi].addmm_(go_g, cols_g.t());
      }
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_grads", [&] {
      using Acc = at::opmath_type<scalar_t>;
      scatter_input_grad_kernel<scalar_t, Acc><<<grid, kThreads, 0, stream>>>(
          g, gcols.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(mask), q0, len,
          grad_input.data_ptr<Acc>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      offset_mask_grad_kernel<scalar_t><<<grid_for(g.deform_groups * g.points() * len, 1), kThreads, 0, stream>>>(
          g, input.data_ptr<scalar_t>(), gcols.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
          ptr_or_null<scalar_t>(mask), q0, len, grad_offset.data_ptr<scalar_t>(),
          mask.has_value() ? grad_mask.data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto type = input.scalar_type();
  at::Tensor grad_bias = grad_output.sum({0, 2, 3}, /*keepdim=*/false, reduced ? at::kFloat : type);
  return {grad_input.to(type), grad_offset, grad_weight.to(type), grad_mask, grad_bias.to(type)};
}

}  // namespace

TORCH_LIBRARY_IMPL(densenets, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_cuda);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace densenets
